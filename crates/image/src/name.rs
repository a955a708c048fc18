//! Image names: `[a-z0-9][a-z0-9._-]*`, at most 64 characters, so that a
//! name is always one plain directory name under `images/`.

use crate::error::ImageError;

pub fn validate_name(name: &str) -> Result<(), ImageError> {
    let bad = |why| {
        Err(ImageError::BadName {
            name: name.to_string(),
            why,
        })
    };
    let Some(first) = name.chars().next() else {
        return bad("it is empty");
    };
    if name.len() > 64 {
        return bad("it is longer than 64 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return bad("it must start with a lowercase letter or a digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
    {
        return bad("it may only contain a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for name in ["tiny", "a", "debian-12.5", "0day", "x_y"] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn bad_names_say_why() {
        for (name, why) in [
            ("", "empty"),
            ("..", "start with"),
            (".hidden", "start with"),
            ("-x", "start with"),
            ("a/b", "may only contain"),
            ("Tiny", "start with"),
            ("tiNy", "may only contain"),
            ("a b", "may only contain"),
            ("a\0", "may only contain"),
        ] {
            let err = validate_name(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        assert!(validate_name(&"a".repeat(65)).is_err());
    }
}
