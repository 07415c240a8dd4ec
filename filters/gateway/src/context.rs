//! The request's context: what the phases learned, as values. The
//! admission calls are built from it, not from headers.

use admission_filter::RequestFacts;
use llm_policy::Decision;
use tenant_auth::Identity;

/// Who the request is from, as authentication found.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub identity: Identity,
    pub request_id: String,
    /// Envoy's span for the request (W3C traceparent), when tracing.
    pub traceparent: Option<String>,
}

impl RequestContext {
    /// The facts an Admit call carries; the decision's once it is made.
    pub fn admission_facts(&self, decision: Option<&Decision>) -> RequestFacts {
        RequestFacts {
            tenant: Some(self.identity.tenant_id.clone()),
            tier: Some(self.identity.tier.clone()),
            model: decision.map(|d| d.model.clone()),
            pool: decision.map(|d| d.pool.clone()),
            prompt_tokens: decision.map(|d| d.prompt_tokens),
            max_tokens: decision.map(|d| d.reserved_output_tokens),
            request_id: Some(self.request_id.clone()),
            credential: Some(self.identity.credential()),
            request_sha256: decision.map(|d| d.request_sha256.clone()),
            traceparent: self.traceparent.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use admission_filter::{FilterPhase, admit_request, open_request};
    use admission_proto::v1::Phase;
    use llm_policy::routing::Workload;
    use llm_policy::usage_chunk::ForcedUsage;
    use tenant_auth::AuthMethod;

    use super::*;

    fn context() -> RequestContext {
        RequestContext {
            identity: Identity {
                tenant_id: "acme".into(),
                tier: "gold".into(),
                method: AuthMethod::ApiKey,
                credential_id: "k1".into(),
            },
            request_id: "r1".into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    fn decision() -> Decision {
        Decision {
            model: "m".into(),
            pool: "latency".into(),
            workload: Workload::Interactive,
            prefix_key: "ab".into(),
            prompt_tokens: 120,
            max_tokens: 16,
            reserved_output_tokens: 64,
            stream: false,
            forced_usage: ForcedUsage::default(),
            body: None,
            request_sha256: "0f".repeat(32),
        }
    }

    #[test]
    fn open_is_built_from_the_identity_alone() {
        let open = open_request(&context().admission_facts(None), "envoy-1").unwrap();
        assert_eq!(open.phase, Phase::Open as i32);
        assert_eq!((open.tenant.as_str(), open.tier.as_str()), ("acme", "gold"));
        assert_eq!(open.credential, "api_key:k1");
        assert_eq!(open.request_id, "r1");
        assert_eq!(open.traceparent.len(), 55);
    }

    #[test]
    fn reserve_carries_the_decision_as_numbers() {
        let facts = context().admission_facts(Some(&decision()));
        let reserve = admit_request(&facts, "envoy-1", FilterPhase::Reserve).unwrap();
        assert_eq!(reserve.phase, Phase::Reserve as i32);
        assert_eq!(
            (reserve.model.as_str(), reserve.pool.as_str()),
            ("m", "latency")
        );
        assert_eq!(reserve.estimated_prompt_tokens, 120);
        // All sequences' output, not one sequence's max_tokens.
        assert_eq!(reserve.max_tokens, 64);
        assert_eq!(reserve.request_sha256, vec![0x0f; 32]);
        // Without a decision there is nothing to reserve.
        assert!(
            admit_request(&context().admission_facts(None), "e", FilterPhase::Reserve).is_none()
        );
    }
}
