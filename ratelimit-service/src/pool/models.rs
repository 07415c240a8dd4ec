//! What each pool's replicas serve, as their `GET /v1/models` cards say:
//! per model the replica's `max_model_len`, and per pool the smallest over
//! its replicas, which is the longest request every replica accepts.
//!
//! The registry's `max_context_tokens` is what operators wrote; the replica
//! knows what it was started with (`--max-model-len`). A request longer
//! than the replica's is refused by vLLM with a 400 the gateway would bill,
//! so llm-policy refuses it first from these numbers (the `PoolLimits` RPC).
//! The scraper in `pool_metrics` fetches the cards; this module parses them
//! and holds the table.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;

use crate::metrics::PoolModelLabel;

/// Largest `/v1/models` body read: a card is a few hundred bytes, and a
/// replica serving hundreds of adapters stays far below this.
pub const MAX_MODELS_BODY: usize = 1 << 20;

/// One replica's models: served name -> `max_model_len`.
pub type ModelLens = BTreeMap<String, u32>;

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelCard>,
}

/// vLLM's card. LoRA adapters' cards carry no `max_model_len` (null), and
/// other OpenAI-compatible servers none at all: those models are skipped.
#[derive(Deserialize)]
struct ModelCard {
    id: String,
    #[serde(default)]
    max_model_len: Option<serde_json::Value>,
}

/// Reads a `/v1/models` answer. `None` when it is not a model list; cards
/// without a usable `max_model_len` (absent, null, not a positive integer,
/// above `u32::MAX`) are left out.
pub fn parse_models(body: &[u8]) -> Option<ModelLens> {
    let list: ModelList = serde_json::from_slice(body).ok()?;
    Some(
        list.data
            .into_iter()
            .filter_map(|card| {
                let len = card.max_model_len?.as_u64()?;
                let len = u32::try_from(len).ok().filter(|&l| l > 0)?;
                Some((card.id, len))
            })
            .collect(),
    )
}

/// Per model, the smallest `max_model_len` among the replicas that serve
/// it. Replicas never read (`None`) count for nothing.
pub fn min_over_replicas<'a>(
    replicas: impl IntoIterator<Item = Option<&'a ModelLens>>,
) -> ModelLens {
    let mut pool = ModelLens::new();
    for lens in replicas.into_iter().flatten() {
        for (model, &len) in lens {
            pool.entry(model.clone())
                .and_modify(|known| *known = (*known).min(len))
                .or_insert(len);
        }
    }
    pool
}

/// The pools' limits as last learned, shared by the scrapers (writers) and
/// the `PoolLimits` RPC (reader), and exported as
/// `ratelimit_pool_max_model_len{pool,model}`.
#[derive(Clone, Default)]
pub struct PoolModels {
    pools: Arc<RwLock<BTreeMap<String, ModelLens>>>,
    gauge: Family<PoolModelLabel, Gauge>,
}

impl std::fmt::Debug for PoolModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolModels")
            .field("pools", &self.snapshot())
            .finish()
    }
}

impl PoolModels {
    /// A table whose changes are written to `gauge`.
    pub fn new(gauge: Family<PoolModelLabel, Gauge>) -> Self {
        Self {
            pools: Arc::default(),
            gauge,
        }
    }

    /// Replaces what is known of `pool`; returns whether it changed.
    pub fn set(&self, pool: &str, lens: ModelLens) -> bool {
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        let before = pools.get(pool);
        if before.map_or(lens.is_empty(), |known| *known == lens) {
            return false;
        }
        let label = |model: &str| PoolModelLabel {
            pool: pool.to_owned(),
            model: model.to_owned(),
        };
        for gone in before
            .into_iter()
            .flatten()
            .filter(|(m, _)| !lens.contains_key(*m))
        {
            self.gauge.remove(&label(gone.0));
        }
        for (model, len) in &lens {
            self.gauge.get_or_create(&label(model)).set(i64::from(*len));
        }
        pools.insert(pool.to_owned(), lens);
        true
    }

    /// Every (pool, model, max_model_len) known, sorted.
    pub fn snapshot(&self) -> Vec<(String, String, u32)> {
        self.pools
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|(pool, lens)| {
                lens.iter()
                    .map(move |(model, len)| (pool.clone(), model.clone(), *len))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vLLM 0.x answer: a base model and a LoRA adapter (no max_model_len).
    const VLLM: &str = r#"{"object":"list","data":[
        {"id":"tiny-llama","object":"model","created":1712345678,"owned_by":"vllm","root":"/models/tiny","parent":null,"max_model_len":2048,
         "permission":[{"id":"modelperm-1","object":"model_permission","created":1712345678,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}]},
        {"id":"tiny-lora","object":"model","created":1712345678,"owned_by":"vllm","root":"/adapters/tiny-lora","parent":"tiny-llama","max_model_len":null,"permission":[]}
    ]}"#;

    #[test]
    fn reads_vllm_cards_and_skips_cards_without_a_length() {
        let lens = parse_models(VLLM.as_bytes()).unwrap();
        assert_eq!(lens, ModelLens::from([("tiny-llama".into(), 2048)]));
    }

    #[test]
    fn odd_lengths_and_bodies() {
        let body = r#"{"data":[{"id":"a","max_model_len":-1},{"id":"b","max_model_len":0},
            {"id":"c","max_model_len":1.5},{"id":"d","max_model_len":"4096"},
            {"id":"e","max_model_len":99999999999},{"id":"f"},{"id":"g","max_model_len":8192}]}"#;
        assert_eq!(
            parse_models(body.as_bytes()),
            Some(ModelLens::from([("g".into(), 8192)]))
        );
        assert_eq!(parse_models(br#"{"data":[]}"#), Some(ModelLens::new()));
        for bad in [
            &b"{\"detail\":\"Not Found\"}"[..],
            b"not json",
            b"",
            b"\xff\xfe",
            b"[]",
        ] {
            assert_eq!(
                parse_models(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_pool_gets_the_smallest_replica() {
        let a = ModelLens::from([("m".into(), 4096), ("only-a".into(), 1000)]);
        let b = ModelLens::from([("m".into(), 2048)]);
        let pool = min_over_replicas([Some(&a), None, Some(&b)]);
        assert_eq!(
            pool,
            ModelLens::from([("m".into(), 2048), ("only-a".into(), 1000)])
        );
        assert!(min_over_replicas([None, None]).is_empty());
    }

    #[test]
    fn table_and_gauge_follow_changes() {
        let gauge = Family::<PoolModelLabel, Gauge>::default();
        let table = PoolModels::new(gauge.clone());
        assert!(table.set("p", ModelLens::from([("m".into(), 2048), ("n".into(), 10)])));
        assert!(!table.set("p", ModelLens::from([("m".into(), 2048), ("n".into(), 10)])));
        assert!(table.set("p", ModelLens::from([("m".into(), 1024)])));
        assert_eq!(table.snapshot(), vec![("p".into(), "m".into(), 1024)]);
        let label = |model: &str| PoolModelLabel {
            pool: "p".into(),
            model: model.into(),
        };
        assert_eq!(gauge.get_or_create(&label("m")).get(), 1024);
        // A model the pool stopped serving leaves the exposition.
        assert!(!gauge.remove(&label("n")));
    }
}
