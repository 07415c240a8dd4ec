//! The policy as one function of plain data: who calls, what they ask for,
//! the body; out comes where the request goes and what it carries, or the
//! reason it is refused.

use filter_common::headers;
use serde_json::Value;
use tenant_registry::{ModelName, PoolName, Tenant};

use crate::body::{self, ParsedRequest, Piece, Segment};
use crate::cache_key;
use crate::config::Policy;
use crate::endpoint::{self, Endpoint, Route};
use crate::error::PolicyError;
use crate::fields::{self, Allowances};
use crate::limits::{self, Caps};
use crate::models_list;
use crate::pool_limits::PoolLimits;
use crate::rewrite::{self, Edit};
use crate::routing::{self, Workload, WorkloadSignals};
use crate::tokens;
use crate::usage_chunk::ForcedUsage;

/// Everything the policy reads from one request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `x-tenant-id`, set by tenant-auth.
    pub tenant_id: Option<&'a str>,
    /// `x-tenant-tier`, set by tenant-auth.
    pub tier: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    /// [`routing::WORKLOAD_HEADER`].
    pub workload_header: Option<&'a str>,
    pub body: &'a [u8],
}

/// The outcome for a request that goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub model: ModelName,
    pub pool: PoolName,
    pub workload: Workload,
    /// Hex prefix-affinity key.
    pub prefix_key: String,
    /// Estimated prompt tokens, all sequences together.
    pub prompt_tokens: u32,
    /// `max_tokens` per sequence (the client's, or the clamped default).
    pub max_tokens: u32,
    /// Output tokens to reserve: `max_tokens` × sequences per prompt
    /// (`n`/`best_of`) × prompts. Sent as `x-llm-max-tokens`, so admission's
    /// prompt + max reservation is an upper bound for the whole request.
    pub reserved_output_tokens: u32,
    pub stream: bool,
    /// Usage reports the gateway forced on a stream whose client did not
    /// ask for them: they must be removed from the response.
    pub forced_usage: ForcedUsage,
    /// The rewritten body, `None` when the original bytes go through.
    pub body: Option<Vec<u8>>,
    /// Hex SHA-256 of the body as the client sent it (before any rewrite),
    /// for the tenant's audit trail.
    pub request_sha256: String,
}

impl Decision {
    /// Headers set on the upstream request (gateway-owned names): for the
    /// router (pool, prefix key), the upstream and the access logs. The
    /// request's digest is not among them: admission reads it as a value.
    pub fn upstream_headers(&self) -> [(&'static str, String); 6] {
        [
            (headers::POOL, self.pool.to_string()),
            (headers::PREFIX_KEY, self.prefix_key.clone()),
            (headers::MODEL, self.model.to_string()),
            (headers::PROMPT_TOKENS, self.prompt_tokens.to_string()),
            (headers::MAX_TOKENS, self.reserved_output_tokens.to_string()),
            (headers::STREAM, self.stream.to_string()),
        ]
    }
}

/// A request whose caller and route are known (the headers phase).
#[derive(Debug, Clone)]
pub struct Admitted<'p> {
    pub tenant: &'p Tenant,
    pub route: Route,
}

/// Identifies the tenant and the route.
///
/// The registry's tier for the tenant is authoritative; a differing
/// `x-tenant-tier` means the two filters run different registry versions
/// (mid-rollout) and is logged, not trusted.
pub fn admit<'p>(
    policy: &'p Policy,
    tenant_id: Option<&str>,
    tier: Option<&str>,
    method: &str,
    path: &str,
) -> Result<Admitted<'p>, PolicyError> {
    let id = tenant_id
        .filter(|id| !id.is_empty())
        .ok_or(PolicyError::MissingTenant)?;
    let tenant = policy
        .registry
        .tenant(id)
        .ok_or_else(|| PolicyError::UnknownTenant(id.to_owned()))?;
    if tenant.disabled {
        return Err(PolicyError::TenantDisabled(id.to_owned()));
    }
    if let Some(tier) = tier
        && tier != tenant.tier
    {
        log::warn!(
            "tenant {id}: x-tenant-tier {tier:?} differs from registry tier {:?}",
            tenant.tier
        );
    }
    let route = endpoint::classify(method, path)?;
    Ok(Admitted { tenant, route })
}

/// The JSON reply for routes the gateway answers itself (`/v1/models`).
pub fn local_reply(
    policy: &Policy,
    pool_limits: &PoolLimits,
    admitted: &Admitted<'_>,
) -> Option<Result<Vec<u8>, PolicyError>> {
    let registry = &policy.registry;
    match &admitted.route {
        Route::ListModels => Some(Ok(models_list::list(
            registry,
            pool_limits,
            admitted.tenant,
        ))),
        Route::RetrieveModel(id) => Some(models_list::retrieve(
            registry,
            pool_limits,
            admitted.tenant,
            id,
        )),
        Route::Inference(_) => None,
    }
}

/// 413 once a body (or its announced length) passes `gateway.max_body_bytes`.
pub fn check_body_size(policy: &Policy, size: u64) -> Result<(), PolicyError> {
    let limit = policy.registry.config().gateway.max_body_bytes;
    if size > limit {
        return Err(PolicyError::BodyTooLarge { size, limit });
    }
    Ok(())
}

/// The whole policy for one request.
pub fn decide(
    policy: &Policy,
    pool_limits: &PoolLimits,
    request: &Request<'_>,
) -> Result<Decision, PolicyError> {
    let admitted = admit(
        policy,
        request.tenant_id,
        request.tier,
        request.method,
        request.path,
    )?;
    match admitted.route {
        Route::Inference(endpoint) => decide_body(
            policy,
            pool_limits,
            admitted.tenant,
            endpoint,
            request.workload_header,
            request.body,
        ),
        Route::ListModels | Route::RetrieveModel(_) => Err(PolicyError::MethodNotAllowed {
            method: request.method.to_owned(),
            path: request.path.to_owned(),
        }),
    }
}

/// The policy for an admitted inference request, once its body is complete.
/// `pool_limits` are the pools' real limits as last learned (empty: unknown).
pub fn decide_body(
    policy: &Policy,
    pool_limits: &PoolLimits,
    tenant: &Tenant,
    endpoint: Endpoint,
    workload_header: Option<&str>,
    body: &[u8],
) -> Result<Decision, PolicyError> {
    let registry = &policy.registry;
    let gateway = &registry.config().gateway;
    check_body_size(policy, u64::try_from(body.len()).unwrap_or(u64::MAX))?;
    let text = std::str::from_utf8(body).map_err(|_| PolicyError::InvalidUtf8)?;
    let mut request = body::parse(endpoint, text)?;
    let tier = registry.tier_of(tenant);
    let allow = Allowances {
        chat_templates: tier.is_some_and(|t| t.allow_chat_templates),
        extra_fields: &gateway.extra_fields,
    };
    let counted = fields::check(endpoint, &request.object, allow)?;
    fields::check_media_urls(&request.prompt, &gateway.media_url_hosts)?;
    let model = limits::authorize_model(registry, tenant, &request.model, endpoint)?;
    // Members rendered into the prompt or compiled per request are charged
    // as prompt text of every sequence they apply to.
    for sequence in &mut request.prompt.sequences {
        for raw in &counted {
            sequence.push(Segment {
                role: None,
                pieces: vec![Piece::Text(raw.get().to_owned())],
            });
        }
    }
    let estimate = tokens::estimate(&request.prompt);
    if endpoint == Endpoint::Embeddings && estimate.sequences > gateway.max_embedding_inputs {
        return Err(PolicyError::TooManyInputs {
            param: "input",
            count: usize::try_from(estimate.sequences).unwrap_or(usize::MAX),
            limit: gateway.max_embedding_inputs,
        });
    }
    // The pool first: its real max_model_len is part of the window.
    let workload = routing::workload(&WorkloadSignals {
        endpoint,
        longest_prompt: estimate.longest,
        long_context_tokens: gateway.long_context_tokens,
        body_batch_hint: request.batch_hint,
        header: workload_header,
    });
    let pool = routing::choose_pool(registry, tenant, workload)?;
    let caps = Caps {
        tier: registry.tier_of(tenant),
        model,
        default_max_tokens: gateway.default_max_tokens,
        pool_max_model_len: pool_limits.max_model_len(registry, &pool, &request.model),
    };
    let budget = limits::output_budget(endpoint, request.max_tokens, &estimate, &caps)?;
    let keys = policy.tenant_keys(tenant);
    let chain_bytes = policy.block_bytes.saturating_mul(policy.prefix_key_blocks);
    let stream_bytes = cache_key::prefix_stream(&request.prompt, chain_bytes);
    let prefix_key = cache_key::prefix_key(
        &keys.chain_seed,
        &stream_bytes,
        policy.block_bytes,
        policy.prefix_key_blocks,
    );
    let (edits, forced_usage) = edits(
        &request,
        keys.salt.as_deref(),
        budget.inject.then_some(budget.max_tokens),
        tier.and_then(|t| t.vllm_priority),
    )?;
    let reserved_output_tokens = budget
        .max_tokens
        .saturating_mul(request.sequences_per_prompt)
        .saturating_mul(estimate.sequences);
    Ok(Decision {
        body: rewrite::apply(&request.object, &edits).map(String::into_bytes),
        model: request.model.into(),
        pool,
        workload,
        prefix_key: cache_key::hex_digest(&prefix_key),
        prompt_tokens: estimate.total,
        max_tokens: budget.max_tokens,
        reserved_output_tokens,
        stream: request.stream,
        forced_usage,
        request_sha256: cache_key::hex_digest(&<sha2::Sha256 as sha2::Digest>::digest(body)),
    })
}

/// The body changes: the tenant's salt (or none), the output cap when the
/// client sent none, usage reporting for streams; and whether the usage
/// chunk is forced on a client that did not ask for it.
fn edits(
    request: &ParsedRequest<'_>,
    salt: Option<&str>,
    inject_max: Option<u32>,
    priority: Option<i32>,
) -> Result<(Vec<Edit>, ForcedUsage), PolicyError> {
    let mut edits = vec![
        match salt {
            // The salt is hex (ours, never the client's): a JSON string
            // as it is, without the escaper's pass over it.
            Some(salt) if salt.bytes().all(|b| b.is_ascii_hexdigit()) => Edit::Set {
                key: "cache_salt",
                value: format!("\"{salt}\""),
            },
            Some(salt) => Edit::Set {
                key: "cache_salt",
                value: Value::String(salt.to_owned()).to_string(),
            },
            None => Edit::Remove { key: "cache_salt" },
        },
        // The tier's scheduling priority, never the client's.
        match priority {
            Some(p) => Edit::Set {
                key: "priority",
                value: p.to_string(),
            },
            None => Edit::Remove { key: "priority" },
        },
        // vLLM names the request after the x-request-id header the gateway
        // set; a body id could collide with another tenant's in its logs.
        Edit::Remove { key: "request_id" },
    ];
    if let (Some(max), Some(key)) = (inject_max, request.endpoint.max_tokens_param()) {
        edits.push(Edit::Set {
            key,
            value: max.to_string(),
        });
    }
    // The Responses API reports usage in its final event without being asked.
    let takes_stream_options = matches!(
        request.endpoint,
        Endpoint::ChatCompletions | Endpoint::Completions
    );
    let mut forced_usage = ForcedUsage::default();
    if request.stream && takes_stream_options {
        let reporting = rewrite::force_usage_reporting(&request.object)?;
        edits.extend(reporting.edit);
        forced_usage = ForcedUsage {
            final_chunk: !reporting.client_asked,
            running: !reporting.client_asked_running,
        };
    }
    Ok((edits, forced_usage))
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
