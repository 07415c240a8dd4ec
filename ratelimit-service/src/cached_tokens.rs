//! Whether each pool's usage reports carry cached prompt tokens.
//!
//! vLLM puts `prompt_tokens_details.cached_tokens` in its usage only when
//! started with `--enable-prompt-tokens-details`. Without it the gateway
//! cannot tell cached prompt tokens from others and bills every one at the
//! full input price, silently: nothing fails. This watch notices and says so
//! once per pool (a warning in the log, `ratelimit_pool_cached_tokens_reported`
//! 0, alert `LlmGatewayPoolCachedTokensNotReported`).
//!
//! Older vLLMs omit the details even with the flag when nothing of the
//! prompt was cached (`if enable_prompt_tokens_details and num_cached_tokens:`;
//! 0.32 sends `cached_tokens: 0`, tools/vllm/OBSERVED.md), so one report
//! without them means nothing. A pool is judged *not reporting* after
//! [`JUDGE_AFTER`] generation reports in a row without them, and *reporting*
//! again at the first one with them. Chat traffic hits the prefix cache all
//! the time (the chat template's head alone fills a KV block), so a hundred
//! misses in a row is a pool that does not report, or one whose traffic
//! shares no prefix at all (then `vllm:prefix_cache_hits_total` is flat too).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::limiter::{CompleteOutcome, Usage};
use crate::metrics::PoolLabel;

/// Generation reports in a row without cached tokens before a pool is
/// judged not to report them.
pub const JUDGE_AFTER: u32 = 100;

/// What a pool's reports say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Reported,
    NotReported,
}

/// What one report tells: `Some(carried)` for a generation that completed
/// with usage, from a filter that says; `None` for everything else. A
/// cancelled or failed request's usage is the running usage of a stream
/// (never with details), and embeddings' usage has none in any vLLM.
pub fn evidence(
    outcome: CompleteOutcome,
    usage: Option<&Usage>,
    carried: Option<bool>,
) -> Option<bool> {
    let generated = usage.is_some_and(|u| u.completion_tokens > 0);
    (outcome == CompleteOutcome::Completed && generated)
        .then_some(carried)
        .flatten()
}

/// One pool's reports (pure state).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoolReports {
    verdict: Option<Verdict>,
    without_in_a_row: u32,
}

impl PoolReports {
    /// Records one report's evidence; the new verdict when it changed.
    pub fn record(&mut self, carried: bool, judge_after: u32) -> Option<Verdict> {
        let next = if carried {
            self.without_in_a_row = 0;
            Verdict::Reported
        } else {
            self.without_in_a_row = self.without_in_a_row.saturating_add(1);
            if self.without_in_a_row < judge_after.max(1) {
                return None;
            }
            Verdict::NotReported
        };
        (self.verdict != Some(next)).then(|| {
            self.verdict = Some(next);
            next
        })
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }
}

/// Every pool's [`PoolReports`], the gauge and the log.
#[derive(Debug)]
pub struct CachedTokensWatch {
    pools: Mutex<HashMap<String, PoolReports>>,
    gauge: Family<PoolLabel, Gauge>,
    judge_after: u32,
}

impl CachedTokensWatch {
    pub fn new(gauge: Family<PoolLabel, Gauge>, judge_after: u32) -> Self {
        Self {
            pools: Mutex::default(),
            gauge,
            judge_after,
        }
    }

    /// Records a settled report of `pool` (see [`evidence`]).
    pub fn record(&self, pool: &str, carried: bool) {
        let changed = self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(pool.to_owned())
            .or_default()
            .record(carried, self.judge_after);
        let Some(verdict) = changed else {
            return;
        };
        let label = PoolLabel {
            pool: pool.to_owned(),
        };
        match verdict {
            Verdict::Reported => {
                self.gauge.get_or_create(&label).set(1);
                tracing::info!(pool, "the pool's usage reports carry cached prompt tokens");
            }
            Verdict::NotReported => {
                self.gauge.get_or_create(&label).set(0);
                tracing::warn!(
                    pool,
                    reports = self.judge_after,
                    "the pool's usage reports carry no cached prompt tokens: every prompt token \
                     is billed at the full input price. Start its vLLM replicas with \
                     --enable-prompt-tokens-details"
                );
            }
        }
    }

    /// The current verdict on `pool`, if any.
    pub fn verdict(&self, pool: &str) -> Option<Verdict> {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pool)
            .and_then(PoolReports::verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_misses_flips_once_and_one_hit_flips_back() {
        let mut p = PoolReports::default();
        for _ in 0..2 {
            assert_eq!(p.record(false, 3), None);
        }
        assert_eq!(p.record(false, 3), Some(Verdict::NotReported));
        // Once per transition, not per report.
        for _ in 0..10 {
            assert_eq!(p.record(false, 3), None);
        }
        assert_eq!(p.record(true, 3), Some(Verdict::Reported));
        assert_eq!(p.record(true, 3), None);
        // A cache miss now and then (no details) changes nothing.
        assert_eq!(p.record(false, 3), None);
        assert_eq!(p.record(true, 3), None);
        assert_eq!(p.verdict(), Some(Verdict::Reported));
    }

    #[test]
    fn only_completed_generations_with_usage_are_evidence() {
        let usage = |completion_tokens| Usage {
            prompt_tokens: 10,
            completion_tokens,
            cached_tokens: 0,
        };
        let done = CompleteOutcome::Completed;
        assert_eq!(evidence(done, Some(&usage(5)), Some(false)), Some(false));
        assert_eq!(evidence(done, Some(&usage(5)), Some(true)), Some(true));
        // A filter that predates the field says nothing.
        assert_eq!(evidence(done, Some(&usage(5)), None), None);
        // Embeddings (no completion), unknown usage, cut-off streams.
        assert_eq!(evidence(done, Some(&usage(0)), Some(false)), None);
        assert_eq!(evidence(done, None, Some(false)), None);
        for outcome in [
            CompleteOutcome::ClientCancelled,
            CompleteOutcome::UpstreamError,
            CompleteOutcome::UpstreamRejected,
            CompleteOutcome::Released,
        ] {
            assert_eq!(evidence(outcome, Some(&usage(5)), Some(false)), None);
        }
    }

    #[test]
    fn gauge_per_pool() {
        let gauge = Family::<PoolLabel, Gauge>::default();
        let watch = CachedTokensWatch::new(gauge.clone(), 2);
        let value = |pool: &str| {
            gauge
                .get_or_create(&PoolLabel {
                    pool: pool.to_owned(),
                })
                .get()
        };
        watch.record("a", true);
        watch.record("b", false);
        assert_eq!(watch.verdict("b"), None, "one miss is no verdict");
        watch.record("b", false);
        assert_eq!((value("a"), value("b")), (1, 0), "a reports, b stopped");
        assert_eq!(watch.verdict("b"), Some(Verdict::NotReported));
    }
}
