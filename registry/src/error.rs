//! Load-time validation: every error names the field that is wrong.

use std::collections::HashSet;

use thiserror::Error;

use crate::config::{JwtAlgorithm, RegistryConfig};

#[derive(Debug, Error, Clone, PartialEq)]
pub enum RegistryError {
    #[error("registry does not parse: {0}")]
    Parse(String),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RegistryError {
    RegistryError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

pub(crate) fn parse_digest(hex_digest: &str, field: &str) -> Result<[u8; 32], RegistryError> {
    let mut out = [0u8; 32];
    if hex_digest.len() != 64 || hex_digest.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            format!("{field}.sha256"),
            "expected 64 lower-case hex characters (the SHA-256 of the key, never the key)",
        ));
    }
    hex::decode_to_slice(hex_digest, &mut out)
        .map_err(|e| invalid(format!("{field}.sha256"), e.to_string()))?;
    Ok(out)
}

pub(crate) fn parse_rfc3339(value: &str, field: &str) -> Result<i64, RegistryError> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| invalid(field, format!("expected an RFC 3339 instant: {e}")))
}

fn check_positive(value: Option<f64>, field: String) -> Result<(), RegistryError> {
    match value {
        Some(v) if !v.is_finite() || v < 0.0 => Err(invalid(field, "must be a finite number >= 0")),
        _ => Ok(()),
    }
}

fn check_limits(limits: &crate::Limits, field: &str) -> Result<(), RegistryError> {
    check_positive(limits.daily_budget_usd, format!("{field}.daily_budget_usd"))?;
    check_positive(
        limits.monthly_budget_usd,
        format!("{field}.monthly_budget_usd"),
    )?;
    if let Some(r) = limits.budget_alert_ratio
        && !(r > 0.0 && r <= 1.0)
    {
        return Err(invalid(
            format!("{field}.budget_alert_ratio"),
            "must be in (0, 1]",
        ));
    }
    // A window declared twice would leave which one counts to chance; the
    // shorthands count as their windows.
    let mut seen: HashSet<(crate::Unit, crate::Per)> = HashSet::new();
    let shorthands = [
        (
            limits.rpm.is_some(),
            crate::Unit::Requests,
            crate::Per::Minute,
        ),
        (
            limits.tpm.is_some(),
            crate::Unit::Tokens,
            crate::Per::Minute,
        ),
        (
            limits.daily_budget_usd.is_some(),
            crate::Unit::Usd,
            crate::Per::CalendarDay,
        ),
        (
            limits.monthly_budget_usd.is_some(),
            crate::Unit::Usd,
            crate::Per::CalendarMonth,
        ),
    ];
    for (set, unit, per) in shorthands {
        if set {
            seen.insert((unit, per));
        }
    }
    for (j, w) in limits.windows.iter().enumerate() {
        let at = format!("{field}.windows[{j}]");
        let Some((unit, amount)) = w.amount() else {
            return Err(invalid(
                at,
                "set exactly one of `requests`, `tokens` or `usd`",
            ));
        };
        let Some(per) = w.per else {
            return Err(invalid(
                format!("{at}.per"),
                "required: second, minute, hour, day, calendar_day or calendar_month",
            ));
        };
        if unit == crate::Unit::Usd {
            check_positive(Some(amount), format!("{at}.usd"))?;
        }
        if !seen.insert((unit, per)) {
            return Err(invalid(
                at,
                format!(
                    "{} per {} is already limited in this table (`rpm`, `tpm`, \
                     `daily_budget_usd` and `monthly_budget_usd` are windows too)",
                    unit.name(),
                    per.name()
                ),
            ));
        }
    }
    Ok(())
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

/// Largest prompt a tenant's audit trail may keep per request.
pub const MAX_AUDIT_PROMPT_BYTES: u32 = 64 * 1024;

pub(crate) fn validate(config: &RegistryConfig) -> Result<(), RegistryError> {
    let g = &config.gateway;
    if g.max_body_bytes == 0 {
        return Err(invalid("gateway.max_body_bytes", "must be > 0"));
    }
    if g.max_buffered_bytes_per_tenant > g.max_buffered_bytes_per_worker {
        return Err(invalid(
            "gateway.max_buffered_bytes_per_tenant",
            "must be <= gateway.max_buffered_bytes_per_worker",
        ));
    }
    if g.max_buffered_bytes_per_tenant < g.max_body_bytes {
        return Err(invalid(
            "gateway.max_buffered_bytes_per_tenant",
            "must be >= gateway.max_body_bytes (one largest body must fit)",
        ));
    }
    if g.max_embedding_inputs == 0 {
        return Err(invalid("gateway.max_embedding_inputs", "must be > 0"));
    }
    if let Some(host) = g
        .media_url_hosts
        .iter()
        .find(|h| h.is_empty() || h.contains(['/', ':', '@', ' ']))
    {
        return Err(invalid(
            "gateway.media_url_hosts",
            format!("{host:?} is not a bare host name"),
        ));
    }
    if g.prefix_block_tokens == 0 {
        return Err(invalid("gateway.prefix_block_tokens", "must be > 0"));
    }
    for (name, tier) in &config.tiers {
        let field = format!("tiers.{name}");
        if !valid_id(name) {
            return Err(invalid(
                field,
                "tier names use [A-Za-z0-9._-], 1 to 64 characters",
            ));
        }
        if !(tier.weight.is_finite() && tier.weight > 0.0) {
            return Err(invalid(format!("{field}.weight"), "must be > 0"));
        }
        for (i, pool) in tier.pools.iter().enumerate() {
            if !config.pools.contains_key(pool) {
                return Err(invalid(
                    format!("{field}.pools[{i}]"),
                    format!("unknown pool {pool:?}"),
                ));
            }
        }
        check_limits(&tier.limits, &format!("{field}.limits"))?;
    }
    for (name, model) in &config.models {
        let field = format!("models.{name}");
        if name.is_empty() || name.len() > 256 {
            return Err(invalid(field, "model names are 1 to 256 characters"));
        }
        let p = &model.price;
        check_positive(
            Some(p.input_per_mtok),
            format!("{field}.price.input_per_mtok"),
        )?;
        check_positive(
            Some(p.output_per_mtok),
            format!("{field}.price.output_per_mtok"),
        )?;
        check_positive(
            p.cached_input_per_mtok,
            format!("{field}.price.cached_input_per_mtok"),
        )?;
        match (&model.base, &model.tenant) {
            (Some(base), Some(tenant)) => {
                if config.models.get(base).is_none_or(|b| b.is_adapter()) {
                    return Err(invalid(
                        format!("{field}.base"),
                        format!("{base:?} is not a base model in [models]"),
                    ));
                }
                if !config.tenants.iter().any(|t| &t.id == tenant) {
                    return Err(invalid(
                        format!("{field}.tenant"),
                        format!("unknown tenant {tenant:?}"),
                    ));
                }
            }
            (None, None) => {}
            _ => {
                return Err(invalid(
                    field,
                    "a LoRA adapter needs both `base` and `tenant`",
                ));
            }
        }
    }
    for (name, pool) in &config.pools {
        let field = format!("pools.{name}");
        if !valid_id(name) {
            return Err(invalid(
                field,
                "pool names use [A-Za-z0-9._-], 1 to 64 characters",
            ));
        }
        if pool.max_in_flight_per_replica == 0 {
            return Err(invalid(
                format!("{field}.max_in_flight_per_replica"),
                "must be > 0",
            ));
        }
        if let Some(u) = pool.max_kv_cache_usage
            && !(u > 0.0 && u <= 1.0)
        {
            return Err(invalid(
                format!("{field}.max_kv_cache_usage"),
                "must be in (0, 1]",
            ));
        }
    }
    for (i, issuer) in config.jwt_issuers.iter().enumerate() {
        let field = format!("jwt_issuers[{i}]");
        if issuer.issuer.is_empty() {
            return Err(invalid(format!("{field}.issuer"), "must not be empty"));
        }
        if issuer.audiences.is_empty() {
            return Err(invalid(
                format!("{field}.audiences"),
                "at least one audience is required (tokens for other services must not pass)",
            ));
        }
        if issuer.jwks.is_none() && issuer.keys.is_empty() {
            return Err(invalid(field, "needs `jwks` or `keys`"));
        }
        for (k, key) in issuer.keys.iter().enumerate() {
            let kf = format!("{field}.keys[{k}]");
            match (key.alg, &key.pem, &key.secret) {
                (JwtAlgorithm::HS256, None, Some(s)) if s.len() >= 32 => {}
                (JwtAlgorithm::HS256, None, Some(_)) => {
                    return Err(invalid(
                        format!("{kf}.secret"),
                        "HS256 secrets need >= 32 bytes",
                    ));
                }
                (JwtAlgorithm::HS256, _, _) => {
                    return Err(invalid(kf, "HS256 keys take `secret` and no `pem`"));
                }
                (_, Some(_), None) => {}
                _ => {
                    return Err(invalid(
                        kf,
                        "public-key algorithms take `pem` and no `secret`",
                    ));
                }
            }
        }
    }
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
        check_limits(&tenant.limits, &format!("{field}.limits"))?;
        for (model, limits) in &tenant.model_limits {
            if !config.models.contains_key(model) {
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
        if tenant.audit.log_prompts
            && !(1..=MAX_AUDIT_PROMPT_BYTES).contains(&tenant.audit.max_prompt_bytes)
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
