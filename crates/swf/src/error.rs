//! Errors of the SWF reader. Every error about the content of a trace names
//! the file and the line, and the field when one is at fault.

use std::fmt;
use std::path::PathBuf;

/// The name of each of the 18 SWF fields, by 1-based field number.
pub const FIELD_NAMES: [&str; 18] = [
    "job number",
    "submit time",
    "wait time",
    "run time",
    "allocated processors",
    "average CPU time",
    "used memory",
    "requested processors",
    "requested time",
    "requested memory",
    "status",
    "user id",
    "group id",
    "executable number",
    "queue number",
    "partition number",
    "preceding job number",
    "think time",
];

/// Where in a trace a problem is: the file, the 1-based line and, when one
/// field is at fault, its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name as the caller gave it.
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// 1-based field number (1..=18), when a single field is at fault.
    pub field: Option<u8>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(field) = self.field {
            let name = FIELD_NAMES
                .get(usize::from(field).wrapping_sub(1))
                .copied()
                .unwrap_or("?");
            write!(f, ": field {field} ({name})")?;
        }
        Ok(())
    }
}

/// Why a line of a trace was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// A field is not a number.
    NotANumber {
        /// The offending text (cut to a readable length).
        text: String,
    },
    /// A number does not fit a 64-bit integer.
    OutOfRange {
        /// The offending text (cut to a readable length).
        text: String,
    },
    /// The line does not have exactly 18 fields.
    FieldCount {
        /// How many whitespace-separated fields the line has.
        found: usize,
    },
    /// A number is larger than any simulation can take (a time beyond
    /// [`crate::MAX_TIME_S`], a memory size beyond
    /// [`crate::MAX_MEMORY_KB`]).
    TooLarge {
        /// The value in the trace.
        value: i64,
        /// The most that is accepted.
        max: i64,
        /// Its unit, for the message (`s`, `KB`).
        unit: &'static str,
    },
    /// A header comment that vgrid interprets (`MaxProcs`, `MaxNodes`) has a
    /// value that is not a non-negative integer.
    BadHeaderValue {
        /// The header key.
        key: &'static str,
        /// The offending value (cut to a readable length).
        text: String,
    },
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::NotANumber { text } => write!(f, "not a number: {text:?}"),
            LineProblem::OutOfRange { text } => {
                write!(f, "number out of range for a 64-bit integer: {text:?}")
            }
            LineProblem::TooLarge { value, max, unit } => write!(
                f,
                "{value} {unit} is more than a simulation can take (at most {max} {unit})"
            ),
            LineProblem::FieldCount { found } => {
                write!(f, "expected 18 whitespace-separated fields, found {found}")
            }
            LineProblem::BadHeaderValue { key, text } => {
                write!(
                    f,
                    "header {key} needs a non-negative integer, found {text:?}"
                )
            }
        }
    }
}

/// A malformed line: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {problem}")]
pub struct LineError {
    /// Where the problem is.
    pub location: Location,
    /// What is wrong.
    pub problem: LineProblem,
}

/// Everything that can go wrong while reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum SwfError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file starts like gzip but does not decompress.
    #[error("{file}: gzip data is corrupt or truncated")]
    Gzip {
        /// The file.
        file: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed (strict mode).
    #[error(transparent)]
    Line(#[from] LineError),
}

/// Cuts a token to a length that reads well in an error message.
pub(crate) fn shown(token: &[u8]) -> String {
    const MAX: usize = 40;
    let cut = &token[..token.len().min(MAX)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if token.len() > MAX {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_error_names_file_line_field_and_why() {
        let err = LineError {
            location: Location {
                file: "x.swf".into(),
                line: 7,
                field: Some(4),
            },
            problem: LineProblem::NotANumber { text: "abc".into() },
        };
        assert_eq!(
            err.to_string(),
            "x.swf:7: field 4 (run time): not a number: \"abc\""
        );
    }

    #[test]
    fn long_tokens_are_cut() {
        let long = vec![b'x'; 100];
        let s = shown(&long);
        assert_eq!(s.chars().count(), 41);
        assert!(s.ends_with('…'));
    }
}
