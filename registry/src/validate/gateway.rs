use crate::config::RegistryConfig;
use crate::error::{RegistryError, invalid};

/// `[gateway]`: the bounds every filter applies to every request.
pub(super) fn validate(config: &RegistryConfig) -> Result<(), RegistryError> {
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
    Ok(())
}
