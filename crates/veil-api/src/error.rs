//! Errors and warnings of loading: `ConfigError` (one bad field, with file:line), the
//! collected `LoadErrors`, non-fatal `Warning`s, and template errors.

use std::fmt;
use std::path::PathBuf;

/// One configuration error, displayed as `file:line: field: message`
/// (e.g. `pii.yaml:14: spec.mtls.mode: unknown mode "STRCT"; expected one of UNSET, DISABLE,
/// PERMISSIVE, STRICT`). `line` 0 means the whole file (e.g. it could not be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as given to the loader.
    pub file: PathBuf,
    /// 1-based line of the offending field (or of the document start); 0 for the whole file.
    pub line: u32,
    /// Dotted path of the field, e.g. `spec.mtls.mode` or `spec.servers[0].port`; empty when
    /// the error concerns the whole document.
    pub field: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found while loading, in file order; a bad input is rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<ConfigError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Something Veil does not act on but the operator should know about (e.g. an unknown kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file, as given to the loader.
    pub file: PathBuf,
    /// 1-based line of the document start.
    pub line: u32,
    /// What was ignored and why.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Errors of [`crate::fill_template`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` without its `}}`.
    #[error("line {line}: unclosed template action `{{{{`; close it with `}}}}`")]
    Unclosed {
        /// 1-based line of the `{{`.
        line: u32,
    },
    /// A parameter the template uses was not given.
    #[error("line {line}: no value for parameter `{name}`; pass it in the parameter map")]
    MissingParam {
        /// 1-based line of the action.
        line: u32,
        /// Parameter key, e.g. `To.ServiceName` or `To.PortForName(http).WorkloadPort`.
        name: String,
    },
    /// A construct this filler does not implement.
    #[error("line {line}: unsupported template action `{action}`; only `.Param`, `(.X.PortForName `name`).Field`, `| default \"v\"`, `if`/`if eq|ne .X \"v\"` and `end` are supported")]
    Unsupported {
        /// 1-based line of the action.
        line: u32,
        /// The action text between the braces.
        action: String,
    },
    /// `if` without `end`, or `end` without `if`.
    #[error("line {line}: unbalanced `if`/`end`")]
    Unbalanced {
        /// 1-based line of the action.
        line: u32,
    },
}
