//! JSON kept in columns (a job's spec, a node's labels) carries the
//! version of its form.
//!
//! Persisted: a change of the spec's or the labels' form needs a new
//! [`JSON_VERSION`], and [`decode`] must then read the old form or refuse
//! it saying what to do.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of the JSON this build writes.
pub const JSON_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    v: u32,
    value: T,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> serde_json::Result<String> {
    serde_json::to_string(&Versioned {
        v: JSON_VERSION,
        value,
    })
}

/// Reads a versioned value, or the bare value written before versions.
pub(crate) fn decode<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    match serde_json::from_str::<Versioned<serde_json::Value>>(text) {
        Ok(versioned) if versioned.v > JSON_VERSION => Err(format!(
            "it has version {}, but this vgrid reads only up to {JSON_VERSION}: run a newer vgrid",
            versioned.v
        )),
        Ok(versioned) => serde_json::from_value(versioned.value).map_err(|e| e.to_string()),
        Err(_) => serde_json::from_str(text).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn values_carry_a_version_and_old_bare_ones_still_read() {
        let labels = BTreeMap::from([("ssd".to_string(), "true".to_string())]);
        let text = encode(&labels).expect("encodes");
        assert_eq!(text, r#"{"v":1,"value":{"ssd":"true"}}"#);
        assert_eq!(
            decode::<BTreeMap<String, String>>(&text),
            Ok(labels.clone())
        );
        assert_eq!(
            decode::<BTreeMap<String, String>>(r#"{"ssd":"true"}"#),
            Ok(labels)
        );
        let newer = decode::<BTreeMap<String, String>>(r#"{"v":9,"value":{}}"#).expect_err("newer");
        assert!(newer.contains("newer vgrid"), "{newer}");
    }
}
