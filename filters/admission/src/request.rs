//! What the admission request is built from: the headers `tenant-auth` and
//! `llm-policy` set (clients cannot forge them: tenant-auth strips them).

use admission_proto::v1::AdmitRequest;

/// Request facts read from gateway headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub tenant: Option<String>,
    pub tier: Option<String>,
    pub model: Option<String>,
    pub pool: Option<String>,
    pub prompt_tokens: Option<String>,
    pub max_tokens: Option<String>,
    pub request_id: Option<String>,
}

/// The Admit call for a request, or `None` when it is not an inference
/// request (no model named by llm-policy) and needs no admission.
pub fn admit_request(facts: &RequestFacts, holder: &str) -> Option<AdmitRequest> {
    let model = facts.model.clone()?;
    let number = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    Some(AdmitRequest {
        tenant: facts.tenant.clone()?,
        tier: facts.tier.clone().unwrap_or_default(),
        model,
        pool: facts.pool.clone().unwrap_or_default(),
        estimated_prompt_tokens: number(&facts.prompt_tokens),
        max_tokens: number(&facts.max_tokens),
        request_id: facts.request_id.clone().unwrap_or_default(),
        holder: holder.to_owned(),
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
            prompt_tokens: Some("120".into()),
            max_tokens: Some("64".into()),
            request_id: Some("r1".into()),
        }
    }

    #[test]
    fn builds_admit_request() {
        let r = admit_request(&facts(), "envoy-1").unwrap();
        assert_eq!((r.tenant.as_str(), r.pool.as_str()), ("acme", "latency"));
        assert_eq!((r.estimated_prompt_tokens, r.max_tokens), (120, 64));
        assert_eq!(r.holder, "envoy-1");
    }

    #[test]
    fn no_model_or_tenant_means_no_admission() {
        assert!(
            admit_request(
                &RequestFacts {
                    model: None,
                    ..facts()
                },
                "e"
            )
            .is_none()
        );
        assert!(
            admit_request(
                &RequestFacts {
                    tenant: None,
                    ..facts()
                },
                "e"
            )
            .is_none()
        );
    }

    #[test]
    fn garbage_numbers_count_as_zero() {
        let r = admit_request(
            &RequestFacts {
                prompt_tokens: Some("-5".into()),
                ..facts()
            },
            "e",
        )
        .unwrap();
        assert_eq!(r.estimated_prompt_tokens, 0);
    }
}
