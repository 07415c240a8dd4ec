use super::limits::check_positive;
use crate::config::RegistryConfig;
use crate::error::{RegistryError, invalid};

/// `[models.<name>]`: prices, and LoRA adapters bound to a base and a tenant.
pub(super) fn validate(config: &RegistryConfig) -> Result<(), RegistryError> {
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
                if config
                    .models
                    .get(base.as_str())
                    .is_none_or(|b| b.is_adapter())
                {
                    return Err(invalid(
                        format!("{field}.base"),
                        format!("{:?} is not a base model in [models]", base.as_str()),
                    ));
                }
                if !config.tenants.iter().any(|t| &t.id == tenant) {
                    return Err(invalid(
                        format!("{field}.tenant"),
                        format!("unknown tenant {:?}", tenant.as_str()),
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
    Ok(())
}
