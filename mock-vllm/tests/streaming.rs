//! SSE streaming: chunk shapes, usage chunk, [DONE], and tokens arriving over time.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_has_role_tokens_usage_and_done_over_time() {
    let server = start(config(4, 20)).await;
    let base = server.base_url();
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "stream please"}]}],
            "max_tokens": 10,
            "stream": true,
            "stream_options": {"include_usage": true},
        }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-mock-replica"], "mock-0");
    let events = read_sse(response, usize::MAX).await;

    // role chunk + 10 content chunks + usage chunk + [DONE]
    assert_eq!(events.len(), 13, "{events:#?}");
    let role = events[0].json();
    assert_eq!(role["object"], "chat.completion.chunk");
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
    let content: Vec<Value> = events[1..11].iter().map(SseEvent::json).collect();
    let id = &role["id"];
    for (i, chunk) in content.iter().enumerate() {
        assert_eq!(&chunk["id"], id, "one id per stream");
        let expected = if i == 9 { json!("length") } else { Value::Null };
        assert_eq!(chunk["choices"][0]["finish_reason"], expected);
        assert!(chunk["choices"][0]["delta"]["content"].is_string());
    }
    let usage = events[11].json();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 10);
    assert!(usage["usage"]["prompt_tokens"].as_u64().expect("prompt") > 0);
    assert_eq!(
        usage["usage"]["total_tokens"].as_u64(),
        Some(10 + usage["usage"]["prompt_tokens"].as_u64().expect("prompt"))
    );
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(events[12].data, "[DONE]");

    // Tokens are delivered as produced: 10 steps of 20 ms separate the first and last.
    let spread = events[10].at - events[1].at;
    assert!(
        spread >= Duration::from_millis(120),
        "tokens arrived within {spread:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_stream_without_usage_ends_with_done() {
    let server = start(config(4, 2)).await;
    let base = server.base_url();
    let response = client()
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "once upon", "max_tokens": 3, "stream": true}))
        .send()
        .await
        .expect("send");
    let events = read_sse(response, usize::MAX).await;
    assert_eq!(events.len(), 4, "{events:#?}");
    let chunks: Vec<Value> = events[..3].iter().map(SseEvent::json).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "text_completion");
        assert!(chunk.get("usage").is_none());
    }
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().expect("text"))
        .collect();
    assert_eq!(text.split_whitespace().count(), 3);
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "length");
    assert_eq!(events[3].data, "[DONE]");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams() {
    let server = start(config(4, 10)).await;
    let base = server.base_url();
    let response = client()
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "forever", "max_tokens": 10_000, "stream": true}))
        .send()
        .await
        .expect("send");
    let reader = tokio::spawn(read_sse(response, usize::MAX));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown waited for the stream"
    );
    let events = tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .expect("stream ended")
        .expect("task");
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e.data != "[DONE]"),
        "an aborted stream has no [DONE]"
    );
}
