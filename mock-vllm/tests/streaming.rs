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
    // Starlette adds the charset to text media types.
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert!(response.headers().get("cache-control").is_none());
    assert_eq!(response.headers()["x-mock-replica"], "mock-0");
    let events = read_sse(response, usize::MAX).await;

    // role chunk + 10 content chunks + usage chunk + [DONE]
    assert_eq!(events.len(), 13, "{events:#?}");
    let role = events[0].json();
    assert_eq!(role["object"], "chat.completion.chunk");
    // The fields vLLM sets on its first chunk, and only those.
    assert_eq!(
        role["choices"],
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null,
                "finish_reason": null}])
    );
    assert!(role["prompt_token_ids"].is_null() && role.get("prompt_token_ids").is_some());
    assert!(role.get("prompt_text").is_some());
    let content: Vec<Value> = events[1..11].iter().map(SseEvent::json).collect();
    let id = &role["id"];
    for (i, chunk) in content.iter().enumerate() {
        assert_eq!(&chunk["id"], id, "one id per stream");
        let choice = chunk["choices"][0].as_object().expect("choice");
        assert!(choice["delta"]["content"].is_string());
        assert!(choice["token_ids"].is_null() && choice.contains_key("token_ids"));
        if i == 9 {
            assert_eq!(choice["finish_reason"], "length");
            assert!(choice.contains_key("stop_reason") && choice["stop_reason"].is_null());
        } else {
            assert!(choice["finish_reason"].is_null());
            assert!(!choice.contains_key("stop_reason"), "{chunk}");
        }
        assert!(chunk.get("prompt_token_ids").is_none());
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
    for (chunk, event) in chunks.iter().zip(&events) {
        assert_eq!(chunk["object"], "text_completion");
        assert!(chunk.get("usage").is_none());
        // vLLM sets every field of a completion stream choice, in this order.
        let keys = [
            "\"index\"",
            "\"text\"",
            "\"logprobs\":null",
            "\"finish_reason\"",
            "\"stop_reason\":null",
            "\"prompt_token_ids\":null",
            "\"token_ids\":null",
        ];
        let at: Vec<usize> = keys
            .iter()
            .map(|k| {
                event
                    .data
                    .find(k)
                    .unwrap_or_else(|| panic!("{k} in {}", event.data))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{}", event.data);
    }
    // The last chunk carries the fingerprint when no usage chunk follows.
    assert!(chunks[1].get("system_fingerprint").is_none());
    let fingerprint = chunks[2]["system_fingerprint"]
        .as_str()
        .expect("fingerprint");
    assert!(
        fingerprint.starts_with("vllm-0.32.0-") && fingerprint.len() == 20,
        "{fingerprint}"
    );
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

/// Streams a request and returns its `data:` payloads, `[DONE]` included as a string.
async fn stream_of(path: &str, body: Value) -> Vec<SseEvent> {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let response = client()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let events = read_sse(response, usize::MAX).await;
    server.shutdown().await;
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_usage_rides_every_chat_chunk() {
    let events = stream_of(
        "/v1/chat/completions",
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "count along"}],
            "max_tokens": 5,
            "stream": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": true},
        }),
    )
    .await;
    // role chunk + 5 content chunks + usage chunk + [DONE]
    assert_eq!(events.len(), 8, "{events:#?}");
    assert_eq!(events[7].data, "[DONE]");
    let chunks: Vec<Value> = events[..7].iter().map(SseEvent::json).collect();
    let prompt = chunks[6]["usage"]["prompt_tokens"]
        .as_u64()
        .expect("prompt");
    assert!(prompt > 0);

    // The role chunk counts no completion token yet; each content chunk counts its own.
    for (i, chunk) in chunks[..6].iter().enumerate() {
        assert_eq!(chunk["choices"].as_array().expect("choices").len(), 1);
        let completion = i as u64;
        assert_eq!(
            chunk["usage"],
            json!({"prompt_tokens": prompt, "total_tokens": prompt + completion,
                   "completion_tokens": completion, "completion_tokens_details": null}),
            "chunk {i}: {chunk}"
        );
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // The usage-only chunk still closes the stream, with the cache details.
    assert_eq!(chunks[6]["choices"], json!([]));
    assert_eq!(
        chunks[6]["usage"],
        // The final chunk drops the null details; the prompt's full blocks were written.
        json!({"prompt_tokens": prompt, "total_tokens": prompt + 5, "completion_tokens": 5,
               "prompt_tokens_details": {"cached_tokens": 0,
                                         "created_cache_tokens": prompt / 16 * 16}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_usage_on_completion_chunks() {
    let events = stream_of(
        "/v1/completions",
        json!({"model": MODEL, "prompt": "hello world", "max_tokens": 3, "stream": true,
               "stream_options": {"include_usage": true, "continuous_usage_stats": true}}),
    )
    .await;
    assert_eq!(events.len(), 5, "{events:#?}");
    let completions: Vec<u64> = events[..3]
        .iter()
        .map(|e| {
            e.json()["usage"]["completion_tokens"]
                .as_u64()
                .expect("usage")
        })
        .collect();
    assert_eq!(completions, [1, 2, 3]);
    for event in &events[..3] {
        // Completions' running usage is the three counts alone.
        let usage = &event.json()["usage"];
        assert_eq!(
            usage,
            &json!({"prompt_tokens": 2,
                    "total_tokens": 2 + usage["completion_tokens"].as_u64().expect("n"),
                    "completion_tokens": usage["completion_tokens"]})
        );
    }
    let last = events[3].json();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 3);
    assert_eq!(events[4].data, "[DONE]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_usage_defaults_off() {
    // vLLM 0.32's StreamOptions default `include_usage` to false, and continuous usage needs
    // it: naming only `continuous_usage_stats` reports no usage at all.
    for options in [
        json!({"continuous_usage_stats": true}),
        json!({"include_usage": null, "continuous_usage_stats": true}),
    ] {
        let events = stream_of(
            "/v1/completions",
            json!({"model": MODEL, "prompt": "hello world", "max_tokens": 3, "stream": true,
                   "stream_options": options}),
        )
        .await;
        assert_eq!(events.len(), 4, "{events:#?}");
        for event in &events[..3] {
            assert!(event.json().get("usage").is_none(), "{}", event.data);
        }
        assert_eq!(events[3].data, "[DONE]");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_continuous_usage_content_chunks_have_no_usage_key() {
    for options in [
        json!({"include_usage": true}),
        json!({"include_usage": true, "continuous_usage_stats": false}),
        // Continuous usage needs include_usage, as in vLLM.
        json!({"include_usage": false, "continuous_usage_stats": true}),
    ] {
        let events = stream_of(
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 2, "stream": true, "stream_options": options}),
        )
        .await;
        let final_usage = options["include_usage"] == json!(true);
        assert_eq!(events.len(), if final_usage { 5 } else { 4 }, "{options}");
        for event in &events[..3] {
            assert!(
                event.json().get("usage").is_none(),
                "vLLM omits usage from content chunks: {}",
                event.data
            );
        }
    }
}
