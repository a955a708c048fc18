//! Names: the one check every job name goes through (given in the file or
//! taken from the file name), the one for user and node names, and the
//! escaping that lets any stored text be printed on one terminal line.

use std::borrow::Cow;
use std::fmt::Write;

pub use crate::limits::MAX_JOB_NAME_CHARS as MAX_NAME_CHARS;
use crate::limits::{MAX_NODE_NAME, MAX_USER_NAME};

/// Whether `name` can name a user or a node: a lower-case letter, then
/// lower-case letters, digits, `_` and `-`, at most `max` bytes. A user's
/// name is also their host directory, so nothing else may pass.
pub fn is_plain_name(name: &str, max: usize) -> bool {
    let mut chars = name.chars();
    name.len() <= max
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Whether `name` can name a user (and so a host directory).
pub fn is_user_name(name: &str) -> bool {
    is_plain_name(name, MAX_USER_NAME)
}

/// Whether `name` can name a node.
pub fn is_node_name(name: &str) -> bool {
    is_plain_name(name, MAX_NODE_NAME)
}

/// What a user or node name must look like, for error messages.
pub fn plain_name_rule(max: usize) -> String {
    format!("1-{max} of a-z, 0-9, `_`, `-`, starting with a letter")
}

/// Why `name` cannot be a job name, or `None` when it can.
///
/// The same check applies to a name written in the file and to one taken
/// from the file name: both end up in `vgrid ps`, logs and the database.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        return Some("must not be empty");
    }
    // Count lazily: a name of 600,000 characters stops at 129.
    if name.chars().nth(MAX_NAME_CHARS).is_some() {
        return Some("must be at most 128 characters long");
    }
    if name.chars().any(is_unsafe_char) {
        return Some("must not contain control characters");
    }
    None
}

/// Whether printing `c` could change how a terminal shows what follows:
/// control characters (newline, escape, ...), line and paragraph
/// separators, and the bidirectional overrides and isolates that reorder
/// the rest of a line.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every character of [`is_unsafe_char`] written as an escape
/// (`\n`, `\r`, `\t`, `\u{1b}`), so that whatever a stored name or reason
/// holds, it prints as itself on one line and cannot forge the rows or
/// colours around it. Other text, backslashes included, is left alone.
pub fn display_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// At most `max` characters of `text` made [`display_safe`], with `…` when
/// cut: for quoting untrusted text inside a message.
pub fn quoted_excerpt(text: &str, max: usize) -> String {
    let mut cut: String = text.chars().take(max).collect();
    let more = text.chars().nth(max).is_some();
    cut = display_safe(&cut).into_owned();
    if more {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_for_emptiness_length_and_control_characters() {
        assert_eq!(name_problem("hello world"), None);
        assert_eq!(name_problem("é-ü_1.2"), None);
        assert_eq!(name_problem(&"x".repeat(128)), None);
        assert_eq!(name_problem(&"é".repeat(128)), None);
        assert!(name_problem(&"x".repeat(129)).is_some_and(|w| w.contains("128")));
        assert!(name_problem(&"x".repeat(600_000)).is_some_and(|w| w.contains("128")));
        assert!(name_problem("  ").is_some_and(|w| w.contains("empty")));
        for bad in [
            "a\nb",
            "a\rb",
            "\u{1b}[2J",
            "a\tb",
            "\u{7f}",
            "a\u{85}b",
            "a\u{202e}b",
        ] {
            assert!(
                name_problem(bad).is_some_and(|w| w.contains("control")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn display_safe_escapes_only_what_a_terminal_would_act_on() {
        assert!(matches!(display_safe("plain é \\n"), Cow::Borrowed(_)));
        assert_eq!(
            display_safe("a\nb\r\tc\u{1b}[31m\u{202e}d\u{85}"),
            "a\\nb\\r\\tc\\u{1b}[31m\\u{202e}d\\u{85}"
        );
        let escaped = display_safe("x\n     2  fake  root  running");
        assert!(!escaped.contains('\n'));
    }

    #[test]
    fn user_and_node_names_are_plain() {
        assert!(is_user_name("admin") && is_user_name("bob_2-x"));
        for bad in ["", ".", "..", "a/b", "Alice", "-x", "1a", &"a".repeat(33)] {
            assert!(!is_user_name(bad), "{bad:?}");
        }
        assert!(is_node_name(&"n".repeat(64)) && !is_node_name(&"n".repeat(65)));
    }

    #[test]
    fn excerpts_are_cut_and_escaped() {
        assert_eq!(quoted_excerpt("abc", 5), "abc");
        assert_eq!(quoted_excerpt("abcdef", 3), "abc…");
        assert_eq!(quoted_excerpt("a\nbcdef", 3), "a\\nb…");
    }
}
