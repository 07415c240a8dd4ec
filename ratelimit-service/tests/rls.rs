//! Envoy's RateLimitService/ShouldRateLimit on the shared gRPC port.

mod common;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use tonic::transport::Channel;

use common::*;

const RLS: &str = r#"
domain = "gw"
tenant_rpm_from_registry = true

[[descriptors]]
key = "remote_address"
rate_limit = { unit = "second", requests_per_unit = 3 }

[[descriptors]]
key = "path"
value = "/shadow"
rate_limit = { unit = "minute", requests_per_unit = 1 }
shadow_mode = true
"#;

fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

async fn ask(
    c: &mut RateLimitServiceClient<Channel>,
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
    hits_addend: u32,
) -> RateLimitResponse {
    c.should_rate_limit(RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend,
    })
    .await
    .unwrap()
    .into_inner()
}

fn header<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

async fn service() -> (Harness, RateLimitServiceClient<Channel>) {
    let dir = tempfile::tempdir().unwrap();
    let rls = dir.path().join("rls.toml");
    std::fs::write(&rls, RLS).unwrap();
    let h = start(&["--rls-config", rls.to_str().unwrap()], unlimited()).await;
    let c = RateLimitServiceClient::connect(format!("http://{}", h.service.grpc_addr))
        .await
        .unwrap();
    (h, c)
}

#[tokio::test]
async fn descriptor_limits_per_value_with_status_and_headers() {
    let (_h, mut c) = service().await;
    let ip = |v| vec![desc(&[("remote_address", v)])];
    for left in [2, 1, 0] {
        let r = ask(&mut c, "gw", ip("10.0.0.1"), 0).await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        let s = &r.statuses[0];
        assert_eq!(s.limit_remaining, left);
        let limit = s.current_limit.as_ref().unwrap();
        assert_eq!(limit.requests_per_unit, 3);
        assert_eq!(limit.unit, Unit::Second as i32);
        assert!(s.duration_until_reset.is_some());
    }
    let r = ask(&mut c, "gw", ip("10.0.0.1"), 0).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    assert_eq!(header(&r, "x-ratelimit-limit"), Some("3, 3;w=1"));
    assert_eq!(header(&r, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&r, "x-ratelimit-reset"), Some("1"));
    // Each value has its own counter.
    let r = ask(&mut c, "gw", ip("10.0.0.2"), 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    // After a second the first address is served again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = ask(&mut c, "gw", ip("10.0.0.1"), 0).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
}

#[tokio::test]
async fn hits_addend_shadow_mode_and_unknown_descriptors() {
    let (_h, mut c) = service().await;
    let r = ask(&mut c, "gw", vec![desc(&[("remote_address", "a")])], 3).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    let r = ask(&mut c, "gw", vec![desc(&[("remote_address", "a")])], 1).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // A descriptor's own hits_addend wins over the request's.
    let mut d = desc(&[("remote_address", "b")]);
    d.hits_addend = Some(UInt64Value { value: 4 });
    let r = ask(&mut c, "gw", vec![d], 1).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);

    // Shadow rule: over its limit, still OK.
    for _ in 0..3 {
        let r = ask(&mut c, "gw", vec![desc(&[("path", "/shadow")])], 0).await;
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses[0].code, Code::Ok as i32);
    }
    // No rule, other domain: OK with no limit, one status per descriptor.
    let r = ask(
        &mut c,
        "gw",
        vec![desc(&[("path", "/other")]), desc(&[("x", "y")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses.len(), 2);
    assert!(r.statuses[0].current_limit.is_none());
    let r = ask(
        &mut c,
        "elsewhere",
        vec![desc(&[("remote_address", "a")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::Ok as i32);
}

#[tokio::test]
async fn tenant_descriptor_uses_the_registry_rpm() {
    let (_h, mut c) = service().await;
    // Tenant a has rpm = 5 in the registry.
    let r = ask(&mut c, "gw", vec![desc(&[("tenant", "a")])], 5).await;
    assert_eq!(r.overall_code, Code::Ok as i32);
    let limit = r.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(limit.requests_per_unit, 5);
    assert_eq!(limit.unit, Unit::Minute as i32);
    let r = ask(&mut c, "gw", vec![desc(&[("tenant", "a")])], 0).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    // All-or-nothing: an over-limit request charges none of its descriptors.
    let r = ask(
        &mut c,
        "gw",
        vec![desc(&[("remote_address", "z")]), desc(&[("tenant", "a")])],
        0,
    )
    .await;
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 3);
}
