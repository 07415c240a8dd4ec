use super::valid_id;
use crate::config::RegistryConfig;
use crate::error::{RegistryError, invalid};

/// `[pools.<name>]`.
pub(super) fn validate(config: &RegistryConfig) -> Result<(), RegistryError> {
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
    Ok(())
}
