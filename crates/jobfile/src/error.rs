//! Errors that point into the job file.

use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use vgrid_model::names::display_safe;

/// Why a job file was refused, with the place in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Diagnostic {
    /// The file name as given by the caller (for messages only).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The field concerned, as a path such as `inputs[1].from`, when known.
    pub field: Option<String>,
    /// Why the file was refused, as a sentence fragment.
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    // The file name and the message may quote what a client sent: escaped,
    // they print on one line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            display_safe(&self.file),
            self.line,
            self.column
        )?;
        if let Some(field) = &self.field {
            write!(f, "field `{}`: ", display_safe(field))?;
        }
        f.write_str(&display_safe(&self.message))
    }
}

/// A job file could not be read or was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    /// The file could not be read at all.
    #[error("cannot read job file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but refused; the diagnostic says where and why.
    #[error("{0}")]
    Invalid(Box<Diagnostic>),
}

impl JobFileError {
    /// The diagnostic, when the file was read but refused.
    pub fn diagnostic(&self) -> Option<&Diagnostic> {
        match self {
            JobFileError::Invalid(d) => Some(d),
            JobFileError::Read { .. } => None,
        }
    }
}

/// Maps byte offsets in a source text to 1-based lines and columns.
pub(crate) struct Locator<'a> {
    file: &'a str,
    source: &'a str,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(file: &'a str, source: &'a str) -> Self {
        Locator { file, source }
    }

    pub(crate) fn source(&self) -> &'a str {
        self.source
    }

    /// Line and column (both 1-based, column in characters) of a byte offset.
    pub(crate) fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        // An offset inside a multi-byte character counts as that character.
        let mut start = offset;
        while !self.source.is_char_boundary(start) {
            start -= 1;
        }
        let before = &self.source[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    pub(crate) fn error(
        &self,
        span: Range<usize>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> JobFileError {
        let (line, column) = self.line_column(span.start);
        JobFileError::Invalid(Box::new(Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            field,
            message: message.into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_from_one() {
        let src = "a = 1\nbé = 2\n";
        let loc = Locator::new("f.toml", src);
        assert_eq!(loc.line_column(0), (1, 1));
        assert_eq!(loc.line_column(4), (1, 5));
        assert_eq!(loc.line_column(6), (2, 1));
        // `=` on line 2 is after "bé " (3 characters, 4 bytes).
        let eq = src[6..].find('=').map(|i| i + 6).unwrap_or(0);
        assert_eq!(loc.line_column(eq), (2, 4));
        // Past the end clamps to the end.
        assert_eq!(loc.line_column(1000), (3, 1));
    }

    #[test]
    fn display_names_file_line_column_field_and_why() {
        let d = Diagnostic {
            file: "job.toml".into(),
            line: 3,
            column: 8,
            field: Some("cpus".into()),
            message: "must be at least 1".into(),
        };
        assert_eq!(
            d.to_string(),
            "job.toml:3:8: field `cpus`: must be at least 1"
        );
    }
}
