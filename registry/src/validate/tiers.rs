use super::limits::check_limits;
use super::valid_id;
use crate::config::RegistryConfig;
use crate::error::{RegistryError, invalid};

/// `[tiers.<name>]`.
pub(super) fn validate(config: &RegistryConfig) -> Result<(), RegistryError> {
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
    Ok(())
}
