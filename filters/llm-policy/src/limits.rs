//! Model access and size limits: the allowlist, the model's endpoint, the
//! context window (tier cap, model cap and the routed pool's real
//! `max_model_len`, the smallest wins) and the tier's output cap.

use tenant_registry::{ModelKind, Registry, Tenant, Tier};

use crate::body::RequestedMax;
use crate::endpoint::Endpoint;
use crate::error::PolicyError;
use crate::tokens::PromptEstimate;

/// A model the tenant may call, with what the limits need to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The base model's kind (an adapter serves what its base serves).
    pub kind: ModelKind,
    /// The model's own window, else its base's.
    pub max_context_tokens: Option<u32>,
}

/// Checks the allowlist (adapters only for their owner, which the registry
/// enforces) and that the model serves `endpoint`.
///
/// A model that does not exist is refused exactly like one that exists but
/// is not allowed (403 `model_not_allowed`): a 404 for unknown names would
/// let a tenant enumerate the catalogue and other tenants' adapter names.
pub fn authorize_model(
    registry: &Registry,
    tenant: &Tenant,
    model: &str,
    endpoint: Endpoint,
) -> Result<ResolvedModel, PolicyError> {
    let models = &registry.config().models;
    let entry = models
        .get(model)
        .filter(|_| registry.model_allowed(tenant, model))
        .ok_or_else(|| PolicyError::ModelNotAllowed(model.to_owned()))?;
    let base = entry
        .base
        .as_deref()
        .and_then(|b| models.get(b))
        .unwrap_or(entry);
    let resolved = ResolvedModel {
        kind: base.kind,
        max_context_tokens: entry.max_context_tokens.or(base.max_context_tokens),
    };
    let serves = match endpoint {
        Endpoint::Embeddings => resolved.kind == ModelKind::Embedding,
        _ => resolved.kind == ModelKind::Chat,
    };
    if !serves {
        return Err(PolicyError::WrongEndpointForModel {
            model: model.to_owned(),
            endpoint: endpoint.path(),
        });
    }
    Ok(resolved)
}

/// The output cap the request runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputBudget {
    /// `max_tokens` per generated sequence (0 for embeddings).
    pub max_tokens: u32,
    /// The client sent none: the gateway writes this one into the body, so
    /// vLLM cannot generate past the reservation or the tier's cap.
    pub inject: bool,
}

/// What governs the output budget besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct Caps<'a> {
    pub tier: Option<&'a Tier>,
    pub model: ResolvedModel,
    /// `gateway.default_max_tokens`.
    pub default_max_tokens: u32,
    /// The routed pool's `max_model_len` for the model, when known
    /// ([`crate::pool_limits`]).
    pub pool_max_model_len: Option<u32>,
}

/// The smaller of two optional caps (an absent one does not apply).
fn smaller(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Caps<'_> {
    /// The registry's context window: the smaller of the tier's and the
    /// model's. It bounds prompt and completion together.
    pub fn context(&self) -> Option<u32> {
        smaller(
            self.tier.and_then(|t| t.max_context_tokens),
            self.model.max_context_tokens,
        )
    }

    /// The effective window: the registry's and the pool's. The pool's part
    /// bounds the prompt and the completion each on its own (see
    /// [`output_budget`]).
    pub fn window(&self) -> Option<u32> {
        smaller(self.context(), self.pool_max_model_len)
    }

    fn output(&self) -> Option<u32> {
        self.tier.and_then(|t| t.max_output_tokens)
    }
}

/// Checks the output and context caps and settles `max_tokens`.
///
/// The context check uses the longest sequence (each prompt of a batch runs
/// in its own window). The registry's window bounds prompt + `max_tokens`.
/// The pool's `max_model_len` bounds each alone, as vLLM does: it refuses a
/// `max_tokens` above it whatever the prompt, and a prompt that does not fit,
/// but when only the sum is too long it clamps the completion to the rest of
/// the window and answers 200 with `finish_reason: "length"` (vLLM >= 0.32),
/// so that request passes. Without a client `max_tokens`, the default is
/// clamped to the tier's output cap and to what the window (the pool's
/// included) leaves, rather than refusing a request the client never asked
/// to be large.
pub fn output_budget(
    endpoint: Endpoint,
    requested: Option<RequestedMax>,
    prompt: &PromptEstimate,
    caps: &Caps<'_>,
) -> Result<OutputBudget, PolicyError> {
    let context = caps.context();
    let window = caps.window();
    let exceeded = |limit: u32, completion: u32| PolicyError::ContextLengthExceeded {
        param: endpoint.prompt_param(),
        limit,
        requested: u64::from(prompt.longest) + u64::from(completion),
        prompt: prompt.longest,
        completion,
    };
    if !endpoint.generates() {
        return match window {
            Some(limit) if prompt.longest > limit => Err(exceeded(limit, 0)),
            _ => Ok(OutputBudget {
                max_tokens: 0,
                inject: false,
            }),
        };
    }
    if let Some(req) = requested {
        if let Some(limit) = caps.output()
            && req.value > limit
        {
            return Err(PolicyError::OutputTokensAboveTier {
                param: req.param,
                requested: req.value,
                limit,
            });
        }
        if let Some(limit) = caps.pool_max_model_len
            && req.value > limit
        {
            return Err(PolicyError::OutputAboveModelLength {
                param: req.param,
                requested: req.value,
                limit,
            });
        }
        if let Some(limit) = context
            && u64::from(prompt.longest) + u64::from(req.value) > u64::from(limit)
        {
            return Err(exceeded(limit, req.value));
        }
        if let Some(limit) = window
            && prompt.longest > limit
        {
            return Err(exceeded(limit, req.value));
        }
        return Ok(OutputBudget {
            max_tokens: req.value,
            inject: false,
        });
    }
    let mut max_tokens = caps.default_max_tokens.max(1);
    if let Some(limit) = caps.output() {
        max_tokens = max_tokens.min(limit);
    }
    if let Some(limit) = window {
        if prompt.longest >= limit {
            return Err(exceeded(limit, 1));
        }
        max_tokens = max_tokens.min(limit - prompt.longest);
    }
    Ok(OutputBudget {
        max_tokens,
        inject: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::policy;
    use filter_common::IntoGatewayError;

    fn authorize(
        tenant: &str,
        model: &str,
        endpoint: Endpoint,
    ) -> Result<ResolvedModel, PolicyError> {
        let p = policy();
        let t = p.registry.tenant(tenant).unwrap().clone();
        authorize_model(&p.registry, &t, model, endpoint)
    }

    #[test]
    fn allowlist_groups_globs_and_adapters() {
        let chat = Endpoint::ChatCompletions;
        assert!(authorize("acme", "chat-small", chat).is_ok());
        assert!(authorize("hobby", "chat-large", chat).is_ok());
        assert_eq!(
            authorize("acme", "acme-lora", chat).unwrap(),
            ResolvedModel {
                kind: ModelKind::Chat,
                max_context_tokens: Some(4096)
            }
        );
        // Another tenant's adapter, an unknown model and a model outside the
        // allowlist all get the same 403.
        for (tenant, model) in [
            ("hobby", "acme-lora"),
            ("shared", "acme-lora"),
            ("hobby", "nope"),
            ("hobby", "embed"),
        ] {
            let e = authorize(tenant, model, chat)
                .unwrap_err()
                .into_gateway_error();
            assert_eq!(
                (e.status, e.code),
                (403, "model_not_allowed"),
                "{tenant} {model}"
            );
        }
    }

    #[test]
    fn model_must_serve_the_endpoint() {
        let e = authorize("acme", "embed", Endpoint::ChatCompletions)
            .unwrap_err()
            .into_gateway_error();
        assert_eq!((e.status, e.code), (400, "model_not_supported"));
        assert!(authorize("acme", "embed", Endpoint::Embeddings).is_ok());
        assert!(authorize("acme", "chat-small", Endpoint::Embeddings).is_err());
    }

    fn caps(
        tier_ctx: Option<u32>,
        tier_out: Option<u32>,
        model_ctx: Option<u32>,
    ) -> (Tier, ResolvedModel) {
        let tier = Tier {
            max_context_tokens: tier_ctx,
            max_output_tokens: tier_out,
            ..Tier::default()
        };
        (
            tier,
            ResolvedModel {
                kind: ModelKind::Chat,
                max_context_tokens: model_ctx,
            },
        )
    }

    fn budget(
        tier: &(Tier, ResolvedModel),
        requested: Option<u32>,
        prompt: u32,
    ) -> Result<OutputBudget, PolicyError> {
        let caps = Caps {
            tier: Some(&tier.0),
            model: tier.1,
            default_max_tokens: 256,
            pool_max_model_len: None,
        };
        chat_budget(&caps, requested, prompt)
    }

    #[test]
    fn context_cap_is_the_smaller_of_tier_and_model() {
        let t = caps(Some(2048), None, Some(1024));
        assert!(budget(&t, Some(24), 1000).is_ok());
        let e = budget(&t, Some(25), 1000).unwrap_err();
        assert_eq!(
            e,
            PolicyError::ContextLengthExceeded {
                param: "messages",
                limit: 1024,
                requested: 1025,
                prompt: 1000,
                completion: 25
            }
        );
        let g = e.into_gateway_error();
        assert_eq!(
            (g.status, g.code, g.param.as_deref()),
            (400, "context_length_exceeded", Some("messages"))
        );
        assert!(budget(&caps(Some(512), None, Some(4096)), Some(100), 500).is_err());
    }

    #[test]
    fn output_cap_of_the_tier() {
        let t = caps(None, Some(512), None);
        assert_eq!(
            budget(&t, Some(512), 10),
            Ok(OutputBudget {
                max_tokens: 512,
                inject: false
            })
        );
        let g = budget(&t, Some(513), 10).unwrap_err().into_gateway_error();
        assert_eq!(
            (g.status, g.code, g.param.as_deref()),
            (400, "invalid_value", Some("max_tokens"))
        );
    }

    #[test]
    fn default_is_clamped_not_refused() {
        assert_eq!(
            budget(&caps(None, None, None), None, 10),
            Ok(OutputBudget {
                max_tokens: 256,
                inject: true
            })
        );
        assert_eq!(
            budget(&caps(None, Some(100), None), None, 10),
            Ok(OutputBudget {
                max_tokens: 100,
                inject: true
            })
        );
        assert_eq!(
            budget(&caps(Some(1000), None, None), None, 900),
            Ok(OutputBudget {
                max_tokens: 100,
                inject: true
            })
        );
        assert!(matches!(
            budget(&caps(Some(1000), None, None), None, 1000),
            Err(PolicyError::ContextLengthExceeded { .. })
        ));
    }

    #[test]
    fn embeddings_check_the_longest_input_only() {
        let (tier, _) = caps(Some(8192), Some(10), None);
        let model = ResolvedModel {
            kind: ModelKind::Embedding,
            max_context_tokens: Some(512),
        };
        let caps = Caps {
            tier: Some(&tier),
            model,
            default_max_tokens: 256,
            // Under the model's 512: the pool's window applies to inputs too.
            pool_max_model_len: Some(510),
        };
        let many_small = PromptEstimate {
            total: 5000,
            longest: 500,
            sequences: 10,
        };
        assert_eq!(
            output_budget(Endpoint::Embeddings, None, &many_small, &caps),
            Ok(OutputBudget {
                max_tokens: 0,
                inject: false
            })
        );
        let one_big = PromptEstimate {
            total: 513,
            longest: 513,
            sequences: 1,
        };
        let e = output_budget(Endpoint::Embeddings, None, &one_big, &caps).unwrap_err();
        assert!(matches!(
            e,
            PolicyError::ContextLengthExceeded {
                param: "input",
                limit: 510,
                ..
            }
        ));
    }

    /// A registry claiming 131072, a pool started with --max-model-len 2048.
    fn pool_caps(tier: &Tier, pool: Option<u32>) -> Caps<'_> {
        Caps {
            tier: Some(tier),
            model: ResolvedModel {
                kind: ModelKind::Chat,
                max_context_tokens: Some(131_072),
            },
            default_max_tokens: 4096,
            pool_max_model_len: pool,
        }
    }

    fn chat_budget(
        caps: &Caps<'_>,
        requested: Option<u32>,
        prompt: u32,
    ) -> Result<OutputBudget, PolicyError> {
        let requested = requested.map(|value| RequestedMax {
            value,
            param: "max_tokens",
        });
        let prompt = PromptEstimate {
            total: prompt,
            longest: prompt,
            sequences: 1,
        };
        output_budget(Endpoint::ChatCompletions, requested, &prompt, caps)
    }

    #[test]
    fn the_pools_max_model_len_bounds_prompt_and_output_each() {
        let tier = Tier::default();
        let caps = pool_caps(&tier, Some(2048));
        assert_eq!(caps.window(), Some(2048));
        // max_tokens alone above the pool's length: vLLM would refuse it.
        let e = chat_budget(&caps, Some(4096), 10).unwrap_err();
        assert_eq!(
            e,
            PolicyError::OutputAboveModelLength {
                param: "max_tokens",
                requested: 4096,
                limit: 2048
            }
        );
        let g = e.into_gateway_error();
        assert_eq!(
            (g.status, g.code, g.param.as_deref()),
            (400, "context_length_exceeded", Some("max_tokens"))
        );
        assert!(g.message.contains("2048"), "{}", g.message);
        // Each fits, the sum does not: vLLM clamps the output, so it passes.
        assert_eq!(
            chat_budget(&caps, Some(2000), 1000),
            Ok(OutputBudget {
                max_tokens: 2000,
                inject: false
            })
        );
        assert!(chat_budget(&caps, Some(2048), 2048).is_ok());
        // A prompt that does not fit.
        assert!(matches!(
            chat_budget(&caps, Some(10), 2049),
            Err(PolicyError::ContextLengthExceeded { limit: 2048, .. })
        ));
        // Unknown pool limit: the registry alone, as before.
        assert!(chat_budget(&pool_caps(&tier, None), Some(4096), 10).is_ok());
    }

    #[test]
    fn the_injected_default_fits_the_pool() {
        let tier = Tier::default();
        let caps = pool_caps(&tier, Some(2048));
        // The default (4096 here) is clamped to what the pool's window
        // leaves, so a request without max_tokens is never refused for it.
        assert_eq!(
            chat_budget(&caps, None, 48),
            Ok(OutputBudget {
                max_tokens: 2000,
                inject: true
            })
        );
        assert!(matches!(
            chat_budget(&caps, None, 2048),
            Err(PolicyError::ContextLengthExceeded { limit: 2048, .. })
        ));
        // The registry's own window still applies with the pool's larger.
        let small = Tier {
            max_context_tokens: Some(1024),
            ..Tier::default()
        };
        assert_eq!(
            chat_budget(&pool_caps(&small, Some(2048)), None, 24),
            Ok(OutputBudget {
                max_tokens: 1000,
                inject: true
            })
        );
        assert!(chat_budget(&pool_caps(&small, Some(2048)), Some(1001), 24).is_err());
    }
}
