use std::collections::HashSet;

use super::limits::check_limits;
use super::valid_id;
use crate::config::RegistryConfig;
use crate::error::{RegistryError, invalid};

/// Largest prompt a tenant's audit trail may keep per request.
pub const MAX_AUDIT_PROMPT_BYTES: u32 = 64 * 1024;

/// `[[tenants]]`: ids, references to tiers, pools and models, limits, keys,
/// SPIFFE IDs and the audit policy.
pub(super) fn validate(config: &RegistryConfig) -> Result<(), RegistryError> {
    let mut seen = HashSet::new();
    for (t, tenant) in config.tenants.iter().enumerate() {
        let field = format!("tenants[{t}]");
        if !valid_id(&tenant.id) {
            return Err(invalid(
                format!("{field}.id"),
                "tenant ids use [A-Za-z0-9._-], 1 to 64 characters",
            ));
        }
        if !seen.insert(tenant.id.as_str()) {
            return Err(invalid(
                format!("{field}.id"),
                format!("duplicate tenant id {:?}", tenant.id),
            ));
        }
        if !config.tiers.contains_key(&tenant.tier) {
            return Err(invalid(
                format!("{field}.tier"),
                format!("unknown tier {:?}", tenant.tier),
            ));
        }
        if let Some(w) = tenant.weight
            && !(w.is_finite() && w > 0.0)
        {
            return Err(invalid(format!("{field}.weight"), "must be > 0"));
        }
        for (i, pool) in tenant.pools.iter().flatten().enumerate() {
            if !config.pools.contains_key(pool) {
                return Err(invalid(
                    format!("{field}.pools[{i}]"),
                    format!("unknown pool {pool:?}"),
                ));
            }
        }
        check_limits(tenant.limits(), &format!("{field}.limits"))?;
        for (model, limits) in &tenant.model_limits {
            if !config.models.contains_key(model.as_str()) {
                return Err(invalid(
                    format!("{field}.model_limits.{model}"),
                    "unknown model",
                ));
            }
            check_limits(limits, &format!("{field}.model_limits.{model}"))?;
        }
        for (k, key) in tenant.api_keys.iter().enumerate() {
            if key.id.is_empty() {
                return Err(invalid(
                    format!("{field}.api_keys[{k}].id"),
                    "must not be empty",
                ));
            }
        }
        for (s, id) in tenant.spiffe_ids.iter().enumerate() {
            if !id.starts_with("spiffe://") {
                return Err(invalid(
                    format!("{field}.spiffe_ids[{s}]"),
                    "SPIFFE IDs start with spiffe://",
                ));
            }
        }
        // Held in the filter per request and carried in its report.
        if tenant.audit().log_prompts
            && !(1..=MAX_AUDIT_PROMPT_BYTES).contains(&tenant.audit().max_prompt_bytes)
        {
            return Err(invalid(
                format!("{field}.audit.max_prompt_bytes"),
                format!("must be in 1..={MAX_AUDIT_PROMPT_BYTES} when log_prompts is on"),
            ));
        }
        // Patterns are compiled (and refused) by ratelimit-service, which
        // applies them; the filters never read them.
    }
    Ok(())
}
