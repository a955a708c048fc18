//! Header comments: `; Key: value` lines. vgrid interprets `MaxProcs`,
//! `MaxNodes` and `UnixStartTime`, and keeps every other key as text.

use crate::error::{LineProblem, shown};

/// What the header comments of a trace say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// `; MaxProcs: N`: the number of processors of the machine.
    pub max_procs: Option<u64>,
    /// `; MaxNodes: N`: the number of nodes of the machine.
    pub max_nodes: Option<u64>,
    /// The 1-based line of the `MaxProcs` comment that gave `max_procs`.
    pub max_procs_line: Option<u64>,
    /// The 1-based line of the `MaxNodes` comment that gave `max_nodes`.
    pub max_nodes_line: Option<u64>,
    /// `; UnixStartTime: T`: the epoch second that submit time 0 stands for.
    pub unix_start_time: Option<i64>,
    /// Every `Key: value` comment, in file order (including the ones above).
    pub fields: Vec<(String, String)>,
}

impl Header {
    /// Reads one comment line (the text after `;`, on 1-based line
    /// `line`). Lines that are not `Key: value` are free text and are
    /// ignored.
    pub(crate) fn read_comment(&mut self, text: &[u8], line: u64) -> Result<(), LineProblem> {
        let text = trim(text);
        let Some(colon) = text.iter().position(|&b| b == b':') else {
            return Ok(());
        };
        let key = trim(&text[..colon]);
        // A key is one word: "Note: uses the EASY scheduler" is a key, but
        // "filter used to produce it was: x" is free text.
        if key.is_empty() || !key.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') {
            return Ok(());
        }
        let value = trim(&text[colon + 1..]);
        if key.eq_ignore_ascii_case(b"MaxProcs") {
            self.max_procs = Some(leading_u64(value, "MaxProcs")?);
            self.max_procs_line = Some(line);
        } else if key.eq_ignore_ascii_case(b"MaxNodes") {
            self.max_nodes = Some(leading_u64(value, "MaxNodes")?);
            self.max_nodes_line = Some(line);
        } else if key.eq_ignore_ascii_case(b"UnixStartTime") {
            // Informative only; a value we cannot read is not worth refusing
            // the trace for.
            self.unix_start_time = leading_u64(value, "UnixStartTime")
                .ok()
                .and_then(|v| i64::try_from(v).ok());
        }
        self.fields.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        Ok(())
    }

    /// The machine size the header gives: `MaxProcs` if positive, else
    /// `MaxNodes` if positive.
    pub fn machine_procs(&self) -> Option<u64> {
        self.max_procs
            .filter(|&p| p > 0)
            .or(self.max_nodes.filter(|&n| n > 0))
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

/// The integer at the start of a header value, e.g. 338 in
/// `338 (batch partition; 512 total)`.
fn leading_u64(value: &[u8], key: &'static str) -> Result<u64, LineProblem> {
    let bad = || LineProblem::BadHeaderValue {
        key,
        text: shown(value),
    };
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(bad());
    }
    let mut v: u64 = 0;
    for &b in &value[..digits] {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(lines: &[&str]) -> Result<Header, LineProblem> {
        let mut h = Header::default();
        for (i, l) in lines.iter().enumerate() {
            h.read_comment(l.as_bytes(), i as u64 + 1)?;
        }
        Ok(h)
    }

    #[test]
    fn reads_machine_size_keys() {
        let h = read(&[
            " Version: 2.2",
            " MaxNodes: 338 (batch partition; 512 total)",
            " MaxProcs: 338",
            " UnixStartTime: 835823160",
            " filter used to produce it was: x",
            "",
        ]);
        let h = h.ok();
        assert_eq!(h.as_ref().and_then(|h| h.max_nodes), Some(338));
        assert_eq!(h.as_ref().and_then(|h| h.max_procs), Some(338));
        assert_eq!(
            h.as_ref().map(|h| (h.max_nodes_line, h.max_procs_line)),
            Some((Some(2), Some(3)))
        );
        assert_eq!(h.as_ref().and_then(|h| h.unix_start_time), Some(835823160));
        assert_eq!(h.as_ref().map(|h| h.fields.len()), Some(4));
    }

    #[test]
    fn machine_procs_prefers_procs_then_nodes() {
        let h = read(&[" MaxNodes: 57", " MaxProcs: 178"]).ok();
        assert_eq!(h.and_then(|h| h.machine_procs()), Some(178));
        let h = read(&[" MaxNodes: 57", " MaxProcs: 0"]).ok();
        assert_eq!(h.and_then(|h| h.machine_procs()), Some(57));
        let h = read(&[]).ok();
        assert_eq!(h.and_then(|h| h.machine_procs()), None);
    }

    #[test]
    fn bad_max_procs_is_an_error() {
        let err = read(&[" MaxProcs: many"]).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("header MaxProcs needs a non-negative integer, found \"many\"".to_string())
        );
        assert!(read(&[" MaxProcs: 99999999999999999999999"]).is_err());
    }
}
