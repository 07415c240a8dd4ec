//! Load-time validation, one module per registry section: every error names
//! the field that is wrong.

mod gateway;
mod jwt;
mod limits;
mod models;
mod pools;
mod tenants;
mod tiers;

use crate::config::RegistryConfig;
use crate::error::{RegistryError, invalid};

/// Checks a parsed registry, section by section.
pub(crate) fn validate(config: &RegistryConfig) -> Result<(), RegistryError> {
    gateway::validate(config)?;
    tiers::validate(config)?;
    models::validate(config)?;
    pools::validate(config)?;
    jwt::validate(config)?;
    tenants::validate(config)
}

/// `field` names the key, built only for an error.
pub(crate) fn parse_digest(
    hex_digest: &str,
    field: impl Fn() -> String,
) -> Result<[u8; 32], RegistryError> {
    let mut out = [0u8; 32];
    if hex_digest.len() != 64 || hex_digest.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            format!("{}.sha256", field()),
            "expected 64 lower-case hex characters (the SHA-256 of the key, never the key)",
        ));
    }
    hex::decode_to_slice(hex_digest, &mut out)
        .map_err(|e| invalid(format!("{}.sha256", field()), e.to_string()))?;
    Ok(out)
}

pub(crate) fn parse_rfc3339(value: &str, field: &str) -> Result<i64, RegistryError> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| invalid(field, format!("expected an RFC 3339 instant: {e}")))
}

/// Whether `id` is a valid tenant, tier or pool id: `[A-Za-z0-9._-]`, 1 to
/// 64 characters, not `.` or `..`.
pub fn valid_id(id: &str) -> bool {
    // Tenant ids name directories (the audit trail's partitions): `.` and
    // `..` would name the parent instead.
    !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}
