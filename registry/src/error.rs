//! What a registry that does not load says: every error names the field
//! that is wrong (the checks are in `validate/`).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum RegistryError {
    #[error("registry does not parse: {0}")]
    Parse(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RegistryError {
    RegistryError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}
