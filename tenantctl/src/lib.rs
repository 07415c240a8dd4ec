//! Registry edits behind `tenantctl`: minting and revoking API keys; and
//! ([`usage`]) billing exports from ratelimit-service's admin API.
//!
//! Edits go through `toml_edit`, so an operator's comments and layout
//! survive, and the result is validated before it is written back.

pub mod usage;

use rand::RngCore;
use tenant_registry::{Registry, api_key_digest_hex};
use thiserror::Error;
use toml_edit::{ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

#[derive(Debug, Error)]
pub enum CtlError {
    #[error("registry is not valid TOML: {0}")]
    Toml(#[from] toml_edit::TomlError),
    #[error("{0}")]
    Registry(#[from] tenant_registry::RegistryError),
    #[error("JWT settings: {0}")]
    Jwt(String),
    #[error("no tenant {0:?} in the registry")]
    UnknownTenant(String),
    #[error("tenant {tenant:?} has no key {key:?}")]
    UnknownKey { tenant: String, key: String },
    #[error("tenant {tenant:?} already has a key {key:?}")]
    DuplicateKey { tenant: String, key: String },
}

/// A freshly minted key: the plaintext exists only in this value.
#[derive(Debug)]
pub struct MintedKey {
    pub id: String,
    pub plaintext: String,
}

/// `sk-` plus 48 hex characters (192 random bits).
pub fn new_api_key() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sk-{hex}")
}

/// Validates registry text fully: structure, references, and JWT keys.
pub fn check(text: &str) -> Result<Registry, CtlError> {
    let registry = Registry::from_toml(text)?;
    let config = serde_json::json!({ "registry": registry.config() });
    tenant_auth::Authenticator::from_json(config.to_string().as_bytes())
        .map_err(|e| CtlError::Jwt(e.to_string()))?;
    Ok(registry)
}

fn tenant_table<'a>(doc: &'a mut DocumentMut, tenant: &str) -> Result<&'a mut Table, CtlError> {
    doc.get_mut("tenants")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|tenants| {
            tenants
                .iter_mut()
                .find(|t| t.get("id").and_then(Item::as_str) == Some(tenant))
        })
        .ok_or_else(|| CtlError::UnknownTenant(tenant.to_owned()))
}

/// Key ids of a tenant, whether keys are written inline or as tables.
fn key_ids(table: &Table) -> Vec<String> {
    match table.get("api_keys") {
        Some(Item::Value(Value::Array(a))) => a
            .iter()
            .filter_map(|v| v.as_inline_table()?.get("id")?.as_str().map(str::to_owned))
            .collect(),
        Some(Item::ArrayOfTables(a)) => a
            .iter()
            .filter_map(|t| t.get("id")?.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Adds a new key to `tenant`; returns the edited registry and the key.
pub fn mint_key(
    text: &str,
    tenant: &str,
    id: Option<&str>,
    expires_at: Option<&str>,
) -> Result<(String, MintedKey), CtlError> {
    let mut doc: DocumentMut = text.parse()?;
    let table = tenant_table(&mut doc, tenant)?;
    let existing = key_ids(table);
    let id = match id {
        Some(id) => id.to_owned(),
        None => (1..)
            .map(|n| format!("key-{n}"))
            .find(|c| !existing.contains(c))
            .unwrap_or_else(|| "key".to_owned()),
    };
    if existing.contains(&id) {
        return Err(CtlError::DuplicateKey {
            tenant: tenant.to_owned(),
            key: id,
        });
    }
    let plaintext = new_api_key();
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut entry = InlineTable::new();
    entry.insert("id", id.as_str().into());
    entry.insert("sha256", api_key_digest_hex(&plaintext).into());
    entry.insert("created_at", created.into());
    if let Some(expiry) = expires_at {
        entry.insert("expires_at", expiry.into());
    }
    match table.get_mut("api_keys") {
        Some(Item::Value(Value::Array(a))) => a.push(entry),
        Some(Item::ArrayOfTables(a)) => a.push(entry.into_table()),
        _ => {
            let mut a = ArrayOfTables::new();
            a.push(entry.into_table());
            table.insert("api_keys", Item::ArrayOfTables(a));
        }
    }
    let out = doc.to_string();
    check(&out)?;
    Ok((out, MintedKey { id, plaintext }))
}

/// Marks `tenant`'s key `id` revoked (kept, so the refusal says "revoked").
pub fn revoke_key(text: &str, tenant: &str, id: &str) -> Result<String, CtlError> {
    let mut doc: DocumentMut = text.parse()?;
    let table = tenant_table(&mut doc, tenant)?;
    let mut found = false;
    match table.get_mut("api_keys") {
        Some(Item::Value(Value::Array(a))) => {
            for key in a.iter_mut().filter_map(Value::as_inline_table_mut) {
                if key.get("id").and_then(Value::as_str) == Some(id) {
                    key.insert("revoked", true.into());
                    found = true;
                }
            }
        }
        Some(Item::ArrayOfTables(a)) => {
            for key in a.iter_mut() {
                if key.get("id").and_then(Item::as_str) == Some(id) {
                    key.insert("revoked", toml_edit::value(true));
                    found = true;
                }
            }
        }
        _ => {}
    }
    if !found {
        return Err(CtlError::UnknownKey {
            tenant: tenant.to_owned(),
            key: id.to_owned(),
        });
    }
    let out = doc.to_string();
    check(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
