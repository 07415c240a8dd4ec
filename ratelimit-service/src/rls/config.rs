//! Descriptor limits for Envoy's standard rate limit service, in the shape
//! of envoyproxy/ratelimit's config (a `domain` with nested `descriptors`),
//! as TOML, passed with `--rls-config`:
//!
//! ```toml
//! domain = "llm-gateway"
//! tenant_rpm_from_registry = true   # `tenant` descriptors default to the registry RPM
//!
//! [[descriptors]]
//! key = "remote_address"
//! rate_limit = { unit = "second", requests_per_unit = 20 }
//!
//! [[descriptors]]
//! key = "tenant"
//! value = "initech"
//! rate_limit = { unit = "minute", requests_per_unit = 30 }
//! shadow_mode = true
//!
//!   [[descriptors.descriptors]]
//!   key = "path"
//!   rate_limit = { unit = "minute", requests_per_unit = 5 }
//! ```

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use thiserror::Error;

use crate::limits::Rate;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlsConfig {
    pub domain: String,
    /// A request descriptor that is exactly `tenant=<id>` and matches no
    /// rule is limited to that tenant's RPM from the registry.
    #[serde(default)]
    pub tenant_rpm_from_registry: bool,
    #[serde(default)]
    pub descriptors: Vec<DescriptorRule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorRule {
    pub key: String,
    /// Absent: matches any value, each value counted separately.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// Evaluate and report, never refuse.
    #[serde(default)]
    pub shadow_mode: bool,
    #[serde(default)]
    pub descriptors: Vec<DescriptorRule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub unit: Unit,
    #[serde(default)]
    pub requests_per_unit: u64,
    /// Matches but never limits (to exempt a value under a wildcard rule).
    #[serde(default)]
    pub unlimited: bool,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    #[serde(alias = "SECOND")]
    Second,
    #[serde(alias = "MINUTE")]
    Minute,
    #[serde(alias = "HOUR")]
    Hour,
    #[serde(alias = "DAY")]
    Day,
}

impl Unit {
    pub fn period_ms(self) -> u64 {
        match self {
            Unit::Second => 1_000,
            Unit::Minute => 60_000,
            Unit::Hour => 3_600_000,
            Unit::Day => 86_400_000,
        }
    }
}

impl RateLimitSpec {
    pub fn rate(&self) -> Option<Rate> {
        (!self.unlimited).then_some(Rate {
            limit: self.requests_per_unit,
            period_ms: self.unit.period_ms(),
        })
    }
}

#[derive(Debug, Error)]
pub enum RlsConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, #[source] std::io::Error),
    #[error("RLS config does not parse: {0}")]
    Parse(String),
    #[error("RLS config {field}: {reason}")]
    Invalid { field: String, reason: &'static str },
}

impl RlsConfig {
    pub fn load(path: &Path) -> Result<Self, RlsConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RlsConfigError::Read(path.display().to_string(), e))?;
        Self::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Self, RlsConfigError> {
        let config: RlsConfig =
            toml::from_str(text).map_err(|e| RlsConfigError::Parse(e.to_string()))?;
        if config.domain.is_empty() {
            return Err(RlsConfigError::Invalid {
                field: "domain".into(),
                reason: "must not be empty",
            });
        }
        validate(&config.descriptors, "descriptors")?;
        Ok(config)
    }
}

fn validate(rules: &[DescriptorRule], field: &str) -> Result<(), RlsConfigError> {
    let mut seen = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let invalid = |reason| RlsConfigError::Invalid {
            field: field.clone(),
            reason,
        };
        if rule.key.is_empty() {
            return Err(invalid("key must not be empty"));
        }
        if !seen.insert((&rule.key, &rule.value)) {
            return Err(invalid("duplicate key/value among siblings"));
        }
        if let Some(rl) = &rule.rate_limit
            && !rl.unlimited
            && rl.requests_per_unit == 0
        {
            return Err(invalid(
                "rate_limit needs requests_per_unit > 0 (or unlimited = true)",
            ));
        }
        validate(&rule.descriptors, &format!("{field}.descriptors"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_descriptors() {
        let c = RlsConfig::from_toml(
            r#"
            domain = "gw"
            [[descriptors]]
            key = "tenant"
            value = "acme"
            rate_limit = { unit = "MINUTE", requests_per_unit = 5 }
              [[descriptors.descriptors]]
              key = "path"
              rate_limit = { unit = "second", requests_per_unit = 1 }
            "#,
        )
        .unwrap();
        assert_eq!(
            c.descriptors[0].rate_limit.as_ref().unwrap().unit,
            Unit::Minute
        );
        assert_eq!(c.descriptors[0].descriptors[0].key, "path");
    }

    #[test]
    fn refuses_typos_and_zero_limits() {
        assert!(
            RlsConfig::from_toml("domain = \"gw\"\n[[descriptors]]\nkey = \"a\"\nshadow = true")
                .is_err()
        );
        assert!(
            RlsConfig::from_toml(
                "domain = \"gw\"\n[[descriptors]]\nkey = \"a\"\nrate_limit = { unit = \"second\" }"
            )
            .is_err()
        );
        assert!(RlsConfig::from_toml("domain = \"\"").is_err());
    }
}
