//! Traces through the real chain: Envoy's span for a request carries the
//! tenant, tier, pool, model and request id, and ratelimit-service's spans
//! (admit, queue wait, settle) are its children in the same trace, whether
//! the client started the trace or Envoy did. An OTLP receiver in the test
//! stands in for the collector.

use std::time::Duration;

use gateway_e2e::otlp::{OtlpReceiver, ReceivedSpan};
use gateway_e2e::{chat, eventually, full_chain, post, start_with, with_digests};

const MODEL: &str = "llama-3.1-8b-instruct";
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn gateway_span<'a>(spans: &'a [ReceivedSpan], rid: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.service == "llm-gateway" && s.attr("request_id") == rid)
}

fn service_spans<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service == "ratelimit-service" && s.trace_id == trace_id)
        .collect()
}

#[test]
fn the_services_spans_join_the_gateways_trace_with_the_tenants_attributes() {
    let receiver = OtlpReceiver::start();
    let registry = with_digests(include_str!("fixtures/admission-registry.toml"));
    let mut config = full_chain(registry, gateway_e2e::FAST_MOCK);
    config.otlp = Some(receiver.addr);
    config.ratelimit_args = vec![
        "--otlp-endpoint".into(),
        format!("http://{}", receiver.addr),
    ];
    let tb = start_with(config);

    let auth = "Bearer sk-bill-t";
    let fresh = post(
        &tb,
        "/v1/chat/completions",
        &[("authorization", auth), ("x-request-id", "trace-fresh-1")],
        &chat(MODEL, "trace me", 3),
    );
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    let continued = post(
        &tb,
        "/v1/chat/completions",
        &[
            ("authorization", auth),
            ("x-request-id", "trace-client-1"),
            (
                "traceparent",
                &format!("00-{CLIENT_TRACE}-b7ad6b7169203331-01"),
            ),
        ],
        &chat(MODEL, "continue my trace", 3),
    );
    assert_eq!(continued.status, 200, "{}", continued.text);

    // Envoy flushes every few seconds, the service every second.
    let mut spans = Vec::new();
    let complete = eventually(Duration::from_secs(30), || {
        spans = receiver.spans();
        ["trace-fresh-1", "trace-client-1"].iter().all(|rid| {
            gateway_span(&spans, rid).is_some_and(|g| {
                let mine = service_spans(&spans, &g.trace_id);
                // A small body is admitted in one call (FULL), and its one
                // lease settled.
                mine.iter().filter(|s| s.name == "ratelimit.admit").count() >= 1
                    && mine.iter().filter(|s| s.name == "ratelimit.settle").count() >= 1
            })
        })
    });
    let names: Vec<(String, String)> = spans
        .iter()
        .map(|s| (s.service.clone(), s.name.clone()))
        .collect();
    let envoy_stats = gateway_e2e::client()
        .get(format!("{}/stats?filter=tracing", tb.envoy_admin_url()))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(complete, "spans received: {names:?}; Envoy: {envoy_stats}");

    for rid in ["trace-fresh-1", "trace-client-1"] {
        let gateway = gateway_span(&spans, rid).expect("gateway span");
        assert_eq!(gateway.attr("tenant_id"), "bill-t", "{gateway:?}");
        assert_eq!(gateway.attr("tier"), "metered", "{gateway:?}");
        assert_eq!(gateway.attr("model"), MODEL, "{gateway:?}");
        assert!(
            ["latency", "throughput"].contains(&gateway.attr("pool")),
            "{gateway:?}"
        );
        for span in service_spans(&spans, &gateway.trace_id) {
            // Children of Envoy's span for the request, not of each other
            // by accident: the context came through the filter.
            if span.name == "ratelimit.queue_wait" {
                continue;
            }
            assert_eq!(span.parent_span_id, gateway.span_id, "{span:?}");
            if span.name == "ratelimit.admit" {
                assert_eq!(span.attr("tenant_id"), "bill-t", "{span:?}");
                assert_eq!(span.attr("request_id"), rid, "{span:?}");
                assert_eq!(span.attr("decision"), "admitted", "{span:?}");
            }
        }
        let full = service_spans(&spans, &gateway.trace_id)
            .into_iter()
            .find(|s| s.name == "ratelimit.admit" && s.attr("phase") == "full")
            .expect("the FULL admit span");
        assert_eq!(full.attr("model"), MODEL);
        assert_eq!(full.attr("pool"), gateway.attr("pool"));
    }
    // A client's own trace is continued, not replaced.
    let continued = gateway_span(&spans, "trace-client-1").expect("gateway span");
    assert_eq!(continued.trace_id, CLIENT_TRACE);
    let fresh = gateway_span(&spans, "trace-fresh-1").expect("gateway span");
    assert_ne!(fresh.trace_id, CLIENT_TRACE);
}
