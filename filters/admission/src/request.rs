//! What the admission request is built from: the facts the gateway
//! module's earlier phases established (identity, decision), as values.

use admission_proto::v1::{AdmitRequest, Phase};
use tenant_registry::{ModelName, PoolName, TenantId, TierName};

use crate::config::FilterPhase;

/// What an Admit call says about a request. The names are the registry's
/// types; they become plain strings only in the proto.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub tenant: Option<TenantId>,
    pub tier: Option<TierName>,
    pub model: Option<ModelName>,
    pub pool: Option<PoolName>,
    pub prompt_tokens: Option<u32>,
    pub max_tokens: Option<u32>,
    pub request_id: Option<String>,
    /// Who authenticated (`<method>:<id>`, never the secret), for the
    /// audit trail.
    pub credential: Option<String>,
    /// Hex SHA-256 of the request body as the client sent it.
    pub request_sha256: Option<String>,
    /// Envoy's span for the request (`x-gateway-traceparent`).
    pub traceparent: Option<String>,
}

/// A W3C traceparent is 55 bytes; anything much longer is not one.
const MAX_TRACEPARENT: usize = 64;

impl RequestFacts {
    /// The trace context to pass on, if it can be one.
    pub fn traceparent(&self) -> String {
        self.traceparent
            .clone()
            .filter(|t| t.len() <= MAX_TRACEPARENT)
            .unwrap_or_default()
    }
}

/// A name for the proto, which carries none as an empty string.
fn text(name: Option<&str>) -> String {
    name.unwrap_or_default().to_owned()
}

/// The OPEN Admit on the headers: the request and its concurrency slot,
/// before the body is read. `None` without a tenant (tenant-auth refused).
pub fn open_request(facts: &RequestFacts, holder: &str) -> Option<AdmitRequest> {
    Some(AdmitRequest {
        tenant: facts.tenant.as_ref()?.to_string(),
        tier: text(facts.tier.as_deref()),
        request_id: facts.request_id.clone().unwrap_or_default(),
        holder: holder.to_owned(),
        phase: Phase::Open as i32,
        credential: facts.credential.clone().unwrap_or_default(),
        traceparent: facts.traceparent(),
        ..AdmitRequest::default()
    })
}

/// The Admit call for a request, or `None` when it is not an inference
/// request (no model named by llm-policy) and needs no admission.
pub fn admit_request(
    facts: &RequestFacts,
    holder: &str,
    phase: FilterPhase,
) -> Option<AdmitRequest> {
    let model = facts.model.as_ref()?.to_string();
    let phase = match phase {
        FilterPhase::Reserve => Phase::Reserve,
        FilterPhase::Full | FilterPhase::Open => Phase::Full,
    };
    Some(AdmitRequest {
        tenant: facts.tenant.as_ref()?.to_string(),
        tier: text(facts.tier.as_deref()),
        model,
        pool: text(facts.pool.as_deref()),
        estimated_prompt_tokens: facts.prompt_tokens.unwrap_or(0),
        max_tokens: facts.max_tokens.unwrap_or(0),
        request_id: facts.request_id.clone().unwrap_or_default(),
        holder: holder.to_owned(),
        phase: phase as i32,
        credential: facts.credential.clone().unwrap_or_default(),
        request_sha256: crate::digest_bytes(facts.request_sha256.as_deref()),
        traceparent: facts.traceparent(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RequestFacts {
        RequestFacts {
            tenant: Some("acme".into()),
            tier: Some("gold".into()),
            model: Some("m".into()),
            pool: Some("latency".into()),
            prompt_tokens: Some(120),
            max_tokens: Some(64),
            request_id: Some("r1".into()),
            credential: Some("api_key:k1".into()),
            request_sha256: Some("0f".repeat(32)),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    #[test]
    fn builds_admit_request() {
        let r = admit_request(&facts(), "envoy-1", FilterPhase::Full).unwrap();
        assert_eq!((r.tenant.as_str(), r.pool.as_str()), ("acme", "latency"));
        assert_eq!((r.estimated_prompt_tokens, r.max_tokens), (120, 64));
        assert_eq!(r.holder, "envoy-1");
        assert_eq!(r.credential, "api_key:k1");
        assert_eq!(r.request_sha256, vec![0x0f; 32]);
        assert_eq!(r.traceparent.len(), 55);
        let long = RequestFacts {
            traceparent: Some("0".repeat(500)),
            ..facts()
        };
        let r = admit_request(&long, "envoy-1", FilterPhase::Full).unwrap();
        assert!(r.traceparent.is_empty());
    }

    #[test]
    fn no_model_or_tenant_means_no_admission() {
        assert!(
            admit_request(
                &RequestFacts {
                    model: None,
                    ..facts()
                },
                "e",
                FilterPhase::Full,
            )
            .is_none()
        );
        assert!(
            admit_request(
                &RequestFacts {
                    tenant: None,
                    ..facts()
                },
                "e",
                FilterPhase::Full,
            )
            .is_none()
        );
    }

    #[test]
    fn an_unknown_count_is_zero() {
        let r = admit_request(
            &RequestFacts {
                prompt_tokens: None,
                ..facts()
            },
            "e",
            FilterPhase::Full,
        )
        .unwrap();
        assert_eq!(r.estimated_prompt_tokens, 0);
    }
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    #[test]
    fn open_and_reserve_requests() {
        let facts = RequestFacts {
            tenant: Some("acme".into()),
            tier: Some("gold".into()),
            request_id: Some("r1".into()),
            ..RequestFacts::default()
        };
        let open = open_request(&facts, "h").unwrap();
        assert_eq!(open.phase, Phase::Open as i32);
        assert_eq!((open.estimated_prompt_tokens, open.max_tokens), (0, 0));
        assert!(open_request(&RequestFacts::default(), "h").is_none());
        let facts = RequestFacts {
            model: Some("m".into()),
            max_tokens: Some(9),
            ..facts
        };
        let reserve = admit_request(&facts, "h", FilterPhase::Reserve).unwrap();
        assert_eq!(reserve.phase, Phase::Reserve as i32);
        assert_eq!(reserve.max_tokens, 9);
    }
}
