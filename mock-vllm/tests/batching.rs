//! Continuous batching: slot limit, queueing visible in metrics, TTFT grows with queueing, and
//! a client that goes away frees its slot at once.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::poll::eventually_async as wait_until;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_batch_is_capped_and_the_rest_waits() {
    let server = start(config(2, 10)).await;
    let base = server.base_url();
    let client = client();
    let requests: Vec<_> = (0..5)
        .map(|i| {
            let request = client
                .post(format!("{base}/v1/chat/completions"))
                .json(&chat_body(&format!("request {i}"), 20));
            tokio::spawn(async move { request.send().await?.json::<Value>().await })
        })
        .collect();

    let saw_queue = wait_until(Duration::from_secs(5), || async {
        metric(&client, &base, "vllm:num_requests_running").await == 2.0
            && metric(&client, &base, "vllm:num_requests_waiting").await == 3.0
    })
    .await;
    assert!(saw_queue, "expected 2 running and 3 waiting");
    // The cap holds for the whole run, not just once.
    for _ in 0..20 {
        assert!(server.gauges().running <= 2);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for request in requests {
        let body = request.await.expect("task").expect("response");
        assert_eq!(body["usage"]["completion_tokens"], 20);
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }
    assert_eq!(
        metric(&client, &base, "vllm:num_requests_running").await,
        0.0
    );
    assert_eq!(
        metric(&client, &base, "vllm:generation_tokens_total").await,
        100.0
    );
    server.shutdown().await;
}

/// Seconds from sending a streaming request to its first event.
async fn time_to_first_token(client: reqwest::Client, base: String, max_tokens: u32) -> Duration {
    let sent = Instant::now();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": max_tokens,
            "stream": true,
        }))
        .send()
        .await
        .expect("send");
    let events = read_sse(response, 1).await;
    events[0].at - sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_request_gets_its_first_token_after_the_running_one() {
    let server = start(config(1, 20)).await;
    let base = server.base_url();
    let client = client();
    // The first request holds the only slot for 10 steps of 20 ms.
    let first = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "occupy the slot", "max_tokens": 10}));
    let first_started = Instant::now();
    let first = tokio::spawn(async move { first.send().await?.json::<Value>().await });
    assert!(
        wait_until(Duration::from_secs(2), || async {
            server.gauges().running == 1
        })
        .await
    );
    let queued = time_to_first_token(client.clone(), base.clone(), 2).await;
    let first_done = first.await.expect("task").expect("first");
    assert_eq!(first_done["usage"]["completion_tokens"], 10);
    let first_duration = first_started.elapsed();

    // Alone, a request's first token arrives after one step.
    let alone = time_to_first_token(client.clone(), base.clone(), 2).await;
    assert!(alone < Duration::from_millis(150), "idle TTFT {alone:?}");
    // Queued behind 10 steps of 20 ms, it cannot start before ~200 ms minus the head start.
    assert!(
        queued >= Duration::from_millis(150),
        "queued TTFT {queued:?}"
    );
    assert!(queued > alone * 2, "queued {queued:?} vs alone {alone:?}");
    assert!(first_duration >= Duration::from_millis(200));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_frees_its_slot_for_the_queue() {
    let server = start(config(1, 10)).await;
    let base = server.base_url();
    let client = client();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "long"}],
            "max_tokens": 10_000,
            "stream": true,
        }))
        .send()
        .await
        .expect("send");
    let mut body = response.bytes_stream();
    use futures_util::StreamExt;
    body.next().await.expect("first chunk").expect("ok");

    // A second request queues behind the endless one.
    let queued = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "next", "max_tokens": 3}));
    let queued = tokio::spawn(async move { queued.send().await?.json::<Value>().await });
    assert!(
        wait_until(Duration::from_secs(2), || async {
            server.gauges().waiting == 1
        })
        .await,
        "second request should wait"
    );
    assert_eq!(server.gauges().running, 1);

    drop(body);
    let body = queued
        .await
        .expect("task")
        .expect("queued request finishes");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert!(
        wait_until(Duration::from_secs(1), || async {
            server.gauges().running == 0
        })
        .await
    );
    assert_eq!(server.gauges().kv_cache_usage, 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_non_streaming_request_leaves_the_engine_at_once() {
    // One step lasts 3 s: the sequence must leave when the client goes, not at the step's end.
    let server = start(config(4, 3000)).await;
    let base = server.base_url();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let request = impatient
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body("never read", 10_000));
    let sent = tokio::spawn(request.send());
    assert!(
        wait_until(Duration::from_secs(1), || async {
            server.gauges().running == 1
        })
        .await,
        "admitted before the client gives up"
    );
    assert!(sent.await.expect("task").is_err(), "times out client-side");
    assert!(
        wait_until(Duration::from_secs(1), || async {
            server.gauges().running == 0
        })
        .await,
        "running = {}",
        server.gauges().running
    );
    let aborted = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    // vLLM 0.32 counts no `abort` when the client hangs up, and records no latency.
    assert!(
        aborted
            .lines()
            .any(|l| l.starts_with("vllm:request_success_total{")
                && l.contains("finished_reason=\"abort\"")
                && l.ends_with(" 0.0")),
        "{aborted}"
    );
    assert!(
        aborted.lines().any(
            |l| l.starts_with("vllm:e2e_request_latency_seconds_count{") && l.ends_with(" 0.0")
        ),
        "{aborted}"
    );
    server.shutdown().await;
}
