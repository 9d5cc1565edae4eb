//! Why a declared OpenAPI document cannot be used: one message naming the file, the place
//! in it when the parser knows one, and the reason.

use std::{fmt, io, path::PathBuf};

/// A declared OpenAPI document that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("{}: cannot read the OpenAPI document: {error}", path.display())]
    Read {
        /// The document's file.
        path: PathBuf,
        /// What the system answered. Not the error's source, so that a reporter printing the
        /// chain of sources does not say it twice.
        error: io::Error,
    },
    /// The file is not well-formed YAML or JSON.
    #[error("{}: not valid {format}: {reason}", Place { path, line: *line, column: *column })]
    Syntax {
        /// The document's file.
        path: PathBuf,
        /// `YAML` or `JSON`, as the file's extension chose.
        format: &'static str,
        /// The 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// The 1-based column of the error, when the parser knows it.
        column: Option<usize>,
        /// What the parser reported.
        reason: String,
    },
    /// The `openapi` field is missing or names a version other than 3.0.x or 3.1.x.
    #[error("{}: not an OpenAPI 3.0 or 3.1 document: {reason}", path.display())]
    Version {
        /// The document's file.
        path: PathBuf,
        /// What the document declares instead.
        reason: String,
    },
    /// The document does not have the structure its OpenAPI version requires.
    #[error(
        "{}: not a valid OpenAPI {version} document at `{at}`: {reason}",
        Place { path, line: *line, column: *column }
    )]
    Structure {
        /// The document's file.
        path: PathBuf,
        /// The OpenAPI version the document declares (`3.0` or `3.1`).
        version: &'static str,
        /// Where in the document, as a dotted path (`paths./users.get`).
        at: String,
        /// The 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// The 1-based column of the error, when the parser knows it.
        column: Option<usize>,
        /// What the parser reported.
        reason: String,
    },
    /// A `$ref` that does not lead to anything usable within the document.
    #[error("{}: bad reference at `{at}`: {reason}", path.display())]
    Reference {
        /// The document's file.
        path: PathBuf,
        /// The JSON pointer of the object holding the `$ref`.
        at: String,
        /// Why it cannot be followed.
        reason: String,
    },
    /// A schema that the JSON Schema validator cannot compile.
    #[error("{}: schema at `{at}` cannot be compiled: {reason}", path.display())]
    Schema {
        /// The document's file.
        path: PathBuf,
        /// The JSON pointer of the schema.
        at: String,
        /// What the validator reported.
        reason: String,
    },
}

/// `file:line:column`, with what is known of the place.
struct Place<'a> {
    path: &'a PathBuf,
    line: Option<usize>,
    column: Option<usize>,
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// A problem found while reading the operations, before it is tied to the document's file.
#[derive(Debug)]
pub(super) enum Problem {
    /// See [`SpecError::Reference`].
    Reference { at: String, reason: String },
    /// See [`SpecError::Schema`].
    Schema { at: String, reason: String },
}

impl Problem {
    pub(super) fn in_file(self, path: &std::path::Path) -> SpecError {
        let path = path.to_path_buf();
        match self {
            Self::Reference { at, reason } => SpecError::Reference { path, at, reason },
            Self::Schema { at, reason } => SpecError::Schema { path, at, reason },
        }
    }
}
