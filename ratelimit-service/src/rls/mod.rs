//! Envoy's rate limit service (`envoy.service.ratelimit.v3`) on top of the
//! same store and bucket arithmetic as admission, so a mesh already using
//! envoyproxy/ratelimit can point its cluster here.
//!
//! Matching follows envoyproxy/ratelimit: walk the descriptor's entries
//! down the rule tree, preferring a rule with the exact value over one with
//! the key alone; the rule reached by the last entry applies. Counters are
//! per domain and per full list of entries, so a key-only rule counts each
//! value separately. Unlike a fixed window, a refused request consumes
//! nothing, and a request passes only if all its enforced descriptors fit.

pub mod config;

use std::sync::Arc;

use crate::limits::{BucketView, Per, Rate, ScopeLimits, Throttles, Unit, keys};
use crate::metrics::{Metrics, RlsLabel};
use crate::reload::SharedRegistry;
use crate::storage::{BucketHit, Store, StoreError};
pub use config::{DescriptorRule, RlsConfig};

/// One descriptor of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Vec<(String, String)>,
    /// Per-descriptor hits (Envoy's `hits_addend` on the descriptor).
    pub hits_addend: Option<u64>,
    pub negative_hits: bool,
    /// The request's own limit override.
    pub limit_override: Option<Rate>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorResult {
    pub over_limit: bool,
    /// The limit applied, if any, and its name.
    pub limit: Option<(Rate, String)>,
    pub remaining: u64,
    pub reset_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsDecision {
    pub over_limit: bool,
    pub statuses: Vec<DescriptorResult>,
    /// x-ratelimit-limit / -remaining / -reset of the tightest limit.
    pub headers: Vec<(String, String)>,
}

/// The rule a descriptor resolves to.
struct Resolved {
    rate: Rate,
    name: String,
    shadow: bool,
}

pub struct RlsLimiter {
    config: Option<Arc<RlsConfig>>,
    registry: SharedRegistry,
    throttles: Arc<Throttles>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl RlsLimiter {
    pub fn new(
        config: Option<RlsConfig>,
        registry: SharedRegistry,
        throttles: Arc<Throttles>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config: config.map(Arc::new),
            registry,
            throttles,
            store,
            metrics,
        }
    }

    /// `hits_addend` is the request-level value (0 means 1).
    pub async fn should_rate_limit(
        &self,
        domain: &str,
        descriptors: &[Descriptor],
        hits_addend: u32,
        now_ms: i64,
    ) -> Result<RlsDecision, StoreError> {
        let config = self.config.as_deref().filter(|c| c.domain == domain);
        let resolved: Vec<Option<Resolved>> = descriptors
            .iter()
            .map(|d| self.resolve(config, d))
            .collect();
        let mut hits = Vec::new();
        let mut hit_of = Vec::with_capacity(descriptors.len());
        for (d, r) in descriptors.iter().zip(&resolved) {
            let Some(r) = r else {
                hit_of.push(None);
                continue;
            };
            let n = d.hits_addend.unwrap_or(u64::from(hits_addend.max(1))) as f64;
            hit_of.push(Some(hits.len()));
            hits.push(BucketHit {
                key: bucket_key(domain, &d.entries),
                rate: r.rate,
                hits: if d.negative_hits { -n } else { n },
                enforce: !r.shadow,
            });
        }
        let outcome = self.store.hit(&hits, now_ms).await?;
        let mut statuses = Vec::with_capacity(descriptors.len());
        for (r, idx) in resolved.iter().zip(hit_of) {
            let (Some(r), Some(idx)) = (r, idx) else {
                statuses.push(DescriptorResult {
                    over_limit: false,
                    limit: None,
                    remaining: 0,
                    reset_ms: 0,
                });
                continue;
            };
            let (fits, view) = outcome.results.get(idx).copied().unwrap_or((
                true,
                BucketView {
                    limit: r.rate.limit,
                    remaining: r.rate.limit,
                    reset_ms: 0,
                },
            ));
            let result = match (fits, r.shadow) {
                (false, true) => "shadow_over_limit",
                (false, false) => "over_limit",
                _ if view.remaining * 5 < view.limit => "near_limit",
                _ => "ok",
            };
            self.metrics
                .rls_hits
                .get_or_create(&RlsLabel {
                    domain: domain.to_owned(),
                    rule: r.name.clone(),
                    result: result.to_owned(),
                })
                .inc();
            statuses.push(DescriptorResult {
                over_limit: !fits && !r.shadow,
                limit: Some((r.rate, r.name.clone())),
                remaining: view.remaining,
                reset_ms: view.reset_ms,
            });
        }
        let headers = headers(&statuses);
        Ok(RlsDecision {
            over_limit: !outcome.allowed,
            statuses,
            headers,
        })
    }

    fn resolve(&self, config: Option<&RlsConfig>, d: &Descriptor) -> Option<Resolved> {
        let rule = config.and_then(|c| find_rule(&c.descriptors, &d.entries));
        if let Some(rule) = rule {
            let spec = rule.rate_limit.as_ref()?;
            let rate = d.limit_override.or(spec.rate())?;
            let name = spec.name.clone().unwrap_or_else(|| rule_name(&d.entries));
            return Some(Resolved {
                rate,
                name,
                shadow: rule.shadow_mode,
            });
        }
        if let Some(rate) = d.limit_override {
            return Some(Resolved {
                rate,
                name: "request_override".into(),
                shadow: false,
            });
        }
        match (config, d.entries.as_slice()) {
            (Some(c), [(key, tenant)]) if c.tenant_rpm_from_registry && key == "tenant" => {
                let registry = self.registry.current();
                let t = registry.tenant(tenant)?;
                let limits = ScopeLimits::compile(
                    &registry.effective_limits(t),
                    self.throttles.fraction(tenant),
                );
                Some(Resolved {
                    rate: Rate::per_minute(limits.get(Unit::Requests, Per::Minute)?),
                    name: "tenant_rpm".into(),
                    shadow: false,
                })
            }
            _ => None,
        }
    }
}

/// The rule the entries lead to, envoyproxy/ratelimit style.
pub fn find_rule<'a>(
    rules: &'a [DescriptorRule],
    entries: &[(String, String)],
) -> Option<&'a DescriptorRule> {
    let mut level = rules;
    let mut found = None;
    for (key, value) in entries {
        let node = level
            .iter()
            .find(|r| &r.key == key && r.value.as_deref() == Some(value.as_str()))
            .or_else(|| level.iter().find(|r| &r.key == key && r.value.is_none()))?;
        found = Some(node);
        level = &node.descriptors;
    }
    found
}

fn rule_name(entries: &[(String, String)]) -> String {
    entries
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

/// JSON of the entries: unambiguous whatever the values contain.
fn bucket_key(domain: &str, entries: &[(String, String)]) -> String {
    keys::rls_bucket(domain, &serde_json::to_string(entries).unwrap_or_default())
}

/// envoyproxy/ratelimit's response headers, from the limited descriptor
/// with the least room left.
fn headers(statuses: &[DescriptorResult]) -> Vec<(String, String)> {
    let Some((status, rate)) = statuses
        .iter()
        .filter_map(|s| s.limit.as_ref().map(|(rate, _)| (s, rate)))
        .min_by_key(|(s, _)| s.remaining)
    else {
        return Vec::new();
    };
    let window_s = rate.period_ms / 1000;
    vec![
        (
            "x-ratelimit-limit".into(),
            format!("{}, {};w={window_s}", rate.limit, rate.limit),
        ),
        ("x-ratelimit-remaining".into(), status.remaining.to_string()),
        (
            "x-ratelimit-reset".into(),
            status.reset_ms.div_ceil(1000).to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RlsConfig {
        RlsConfig::from_toml(
            r#"
            domain = "gw"
            [[descriptors]]
            key = "tenant"
            rate_limit = { unit = "minute", requests_per_unit = 10 }
            [[descriptors]]
            key = "tenant"
            value = "vip"
            rate_limit = { unit = "minute", requests_per_unit = 1000 }
              [[descriptors.descriptors]]
              key = "path"
              rate_limit = { unit = "second", requests_per_unit = 2 }
            "#,
        )
        .unwrap()
    }

    fn e(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn exact_value_beats_key_only_and_nesting_descends() {
        let c = rules();
        let limit = |entries: &[(&str, &str)]| {
            find_rule(&c.descriptors, &e(entries))
                .and_then(|r| r.rate_limit.as_ref())
                .map(|r| r.requests_per_unit)
        };
        assert_eq!(limit(&[("tenant", "acme")]), Some(10));
        assert_eq!(limit(&[("tenant", "vip")]), Some(1000));
        assert_eq!(limit(&[("tenant", "vip"), ("path", "/x")]), Some(2));
        assert_eq!(limit(&[("tenant", "acme"), ("path", "/x")]), None);
        assert_eq!(limit(&[("other", "x")]), None);
    }

    #[test]
    fn headers_follow_the_tightest_descriptor() {
        let statuses = [
            DescriptorResult {
                over_limit: false,
                limit: Some((Rate::per_minute(100), "a".into())),
                remaining: 50,
                reset_ms: 30_000,
            },
            DescriptorResult {
                over_limit: false,
                limit: Some((
                    Rate {
                        limit: 2,
                        period_ms: 1000,
                    },
                    "b".into(),
                )),
                remaining: 1,
                reset_ms: 500,
            },
        ];
        let h = headers(&statuses);
        assert_eq!(h[0].1, "2, 2;w=1");
        assert_eq!(h[1].1, "1");
        assert_eq!(h[2].1, "1");
    }
}
