//! Endpoint shapes, errors, metrics and the debug routes.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_completion_bodies_look_like_vllm() {
    // A small context: a chat without max_tokens decodes all of what is left of it.
    let server = start(mock_vllm::MockConfig {
        max_model_len: 100,
        ..config(4, 1)
    })
    .await;
    let base = server.base_url();
    let client = client();
    let chat: Value = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hello world"}]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    // vLLM's ids: the prefix, then 16 hex digits when no X-Request-Id names the request.
    let id = chat["id"].as_str().expect("id");
    let hex = id.strip_prefix("chatcmpl-").expect("chatcmpl- prefix");
    assert!(
        hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["model"], MODEL);
    assert!(chat["created"].as_u64().expect("created") > 1_600_000_000);
    assert_eq!(
        chat["choices"][0]["message"],
        json!({"role": "assistant", "content": chat["choices"][0]["message"]["content"],
               "refusal": null, "annotations": null, "audio": null, "function_call": null,
               "reasoning": null})
    );
    assert_eq!(chat["choices"][0]["finish_reason"], "length");
    assert!(
        chat["choices"][0]
            .as_object()
            .expect("choice")
            .contains_key("stop_reason")
    );
    assert!(chat["choices"][0]["stop_reason"].is_null());
    // No max_tokens: vLLM generates up to the end of the context.
    let prompt_tokens = chat["usage"]["prompt_tokens"].as_u64().expect("prompt");
    assert_eq!(chat["usage"]["completion_tokens"], 100 - prompt_tokens);
    assert_eq!(chat["usage"]["total_tokens"], 100);
    let words = chat["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .split_whitespace()
        .count();
    assert_eq!(words as u64, 100 - prompt_tokens);

    let completion: Value = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "hello world", "max_tokens": 5}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(completion["object"], "text_completion");
    // cl100k_base: "hello world" is exactly two tokens.
    assert_eq!(
        completion["usage"],
        json!({"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7,
               // Completions leave `created_cache_tokens` unset, as vLLM does.
               "prompt_tokens_details": {"cached_tokens": 0, "created_cache_tokens": null,
                                         "multimodal_tokens": null},
               "completion_tokens_details": null})
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert!(completion["choices"][0]["stop_reason"].is_null());

    // A completion without max_tokens gets vLLM's 16.
    let short: Value = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "hello world"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(short["usage"]["completion_tokens"], 16);

    let by_ids: Value = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": [1, 2, 3, 4], "max_tokens": 1}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(by_ids["usage"]["prompt_tokens"], 4);
    server.shutdown().await;
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(response.headers()["x-mock-replica"], "mock-0");
    (status, response.json().await.expect("json error body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_the_openai_shape() {
    let server = start(mock_vllm::MockConfig {
        max_model_len: 100,
        ..config(4, 1)
    })
    .await;
    let base = server.base_url();
    let client = client();
    let post = |path: &str| client.post(format!("{base}{path}"));

    let (status, body) = error_of(
        post("/v1/chat/completions")
            .json(&chat_body("hi", 1).as_object().cloned().map(|mut o| {
                o.insert("model".into(), json!("gpt-nope"));
                o
            }))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": {"message": format!(
                   "The model `gpt-nope` does not exist. Valid aliases: {MODEL}."),
               "type": "NotFoundError", "param": "model", "code": 404}})
    );

    let (status, body) = error_of(
        post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"message": "1 validation error:\n  {'type': 'json_invalid', 'loc': \
                'body.1', 'msg': 'JSON decode error', 'input': '<dict of 0 items>', 'ctx': \
                {'error': 'Expecting property name enclosed in double quotes'}}",
               "type": "Bad Request", "param": "body.1", "code": 400}})
    );

    let (status, body) = error_of(
        post("/v1/completions")
            .json(&json!({"model": MODEL, "prompt": "x", "max_tokens": 0}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        json!({"message": "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
               "type": "BadRequestError", "param": "max_tokens", "code": 400})
    );

    // Starlette's own answers: no vLLM error body.
    let response = post("/v1/nope").send().await.expect("send");
    assert_eq!(response.headers()["content-type"], "application/json");
    let (status, body) = error_of(response).await;
    assert_eq!(status, 404);
    assert_eq!(body, json!({"detail": "Not Found"}));
    let response = client
        .get(format!("{base}/v1/chat/completions"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["allow"], "POST");
    let (status, body) = error_of(response).await;
    assert_eq!(status, 405);
    assert_eq!(body, json!({"detail": "Method Not Allowed"}));
    let response = post("/v1/models").send().await.expect("send");
    assert_eq!(response.headers()["allow"], "GET");
    assert_eq!(error_of(response).await.0, 405);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_vllm_names_and_can_go_stale() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let client = client();
    client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "hello world", "max_tokens": 3}))
        .send()
        .await
        .expect("send");
    let response = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-mock-replica"], "mock-0");
    let text = response.text().await.expect("text");
    let labels = format!("{{engine=\"0\",model_name=\"{MODEL}\"}}");
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}{labels} "))),
            "{name} missing in\n{text}"
        );
    }
    assert!(text.contains("vllm:time_to_first_token_seconds_bucket{"));
    assert!(text.contains(&format!(
        "vllm:request_success_total{{engine=\"0\",finished_reason=\"length\",model_name=\"{MODEL}\"}} 1.0"
    )));
    assert_eq!(
        metric(&client, &base, "vllm:prompt_tokens_total").await,
        2.0
    );
    assert_eq!(
        metric(&client, &base, "vllm:generation_tokens_total").await,
        3.0
    );
    assert_eq!(
        metric(&client, &base, "vllm:e2e_request_latency_seconds_count").await,
        1.0
    );

    let off = client
        .post(format!("{base}/debug/metrics?enabled=false"))
        .send()
        .await
        .expect("toggle");
    assert_eq!(off.status(), 200);
    let stale = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(stale.status(), 503);
    client
        .post(format!("{base}/debug/metrics?enabled=true"))
        .send()
        .await
        .expect("toggle");
    let fresh = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(fresh.status(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_log_records_what_reached_the_replica() {
    let server = start(mock_vllm::MockConfig {
        replica_name: "pool-a-1".into(),
        ..config(4, 1)
    })
    .await;
    let base = server.base_url();
    let client = client();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .header("x-tenant-id", "acme")
        .json(
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 1, "cache_salt": "salt-1"}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-mock-replica"], "pool-a-1");
    client
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .expect("models");

    let log: Vec<Value> = client
        .get(format!("{base}/debug/requests"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(log.len(), 2, "only /v1 requests are recorded: {log:#?}");
    let chat = &log[0];
    assert_eq!(chat["method"], "POST");
    assert_eq!(chat["path"], "/v1/chat/completions");
    assert_eq!(chat["headers"]["x-tenant-id"], "acme");
    assert_eq!(chat["body"]["cache_salt"], "salt-1");
    assert_eq!(chat["replica"], "pool-a-1");
    assert_eq!(chat["cached_tokens"], 0);
    assert!(chat["received_at_ms"].as_u64().expect("ms") > 1_600_000_000_000);
    assert_eq!(log[1]["path"], "/v1/models");
    assert_eq!(log[1]["method"], "GET");

    client
        .post(format!("{base}/debug/reset"))
        .send()
        .await
        .expect("reset");
    let log: Vec<Value> = client
        .get(format!("{base}/debug/requests"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(log.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_models_and_health() {
    let server = start(mock_vllm::MockConfig {
        embedding_models: vec!["bge-small".into()],
        ..config(4, 1)
    })
    .await;
    let base = server.base_url();
    let client = client();
    let body: Value = client
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": "bge-small", "input": ["hello world", "hello"]}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().expect("vector").len(), 16);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(body["usage"]["prompt_tokens"], 3);

    let wrong_kind = client
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": MODEL, "input": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong_kind.status(), 404);

    let models: Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [MODEL, "bge-small"]);
    let health = client
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_options_without_a_stream_are_refused_like_vllm() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let client = client();
    let bodies = [
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 1, "stream_options": {"include_usage": true}}),
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": "hi", "max_tokens": 1, "stream": false,
                   "stream_options": {"continuous_usage_stats": true}}),
        ),
        // Checked before the model, as vLLM's request model does.
        (
            "/v1/chat/completions",
            json!({"model": "gpt-nope", "messages": [], "stream_options": {"x": 1}}),
        ),
    ];
    for (path, body) in bodies {
        let (status, error) = error_of(
            client
                .post(format!("{base}{path}"))
                .json(&body)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        // vLLM 0.32's VLLMValidationError is no ValueError: pydantic lets it through and vLLM
        // answers it as a plain BadRequestError.
        assert_eq!(
            error["error"],
            json!({"message": "Stream options can only be defined when `stream=True`. \
                               (parameter=stream_options)",
                   "type": "BadRequestError", "param": "stream_options", "code": 400})
        );
    }
    // An empty object is falsy to vLLM's check, so it passes.
    let ok = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"model": MODEL, "prompt": "hi", "max_tokens": 1, "stream_options": {}}))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    server.shutdown().await;
}

/// Byte offset of `"key":` in a raw JSON body.
fn key_at(body: &str, key: &str) -> usize {
    body.find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {body}"))
}

fn assert_prompt_logprobs(logprobs: &Value, prompt_tokens: u64, top: usize) {
    let positions = logprobs.as_array().expect("prompt_logprobs is an array");
    assert_eq!(
        positions.len() as u64,
        prompt_tokens,
        "one entry per prompt token"
    );
    assert!(positions[0].is_null(), "nothing predicts the first token");
    for position in &positions[1..] {
        let entries = position.as_object().expect("token id -> logprob");
        assert!(
            entries.len() == top || entries.len() == top + 1,
            "{position}"
        );
        for (id, entry) in entries {
            id.parse::<u32>().expect("keys are token ids");
            assert!(entry["logprob"].as_f64().expect("logprob") <= 0.0);
            assert!(entry["rank"].as_u64().expect("rank") >= 1);
            assert!(entry["decoded_token"].is_string());
        }
    }
    let decoded: Vec<&str> = positions[1..]
        .iter()
        .map(|p| {
            // The prompt's own token comes first in each map.
            let (_, first) = p.as_object().expect("map").iter().next().expect("entry");
            first["decoded_token"].as_str().expect("text")
        })
        .collect();
    assert!(decoded.contains(&" usage"), "{decoded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_logprobs_come_after_usage_in_chat_and_in_the_completion_choice() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let client = client();

    let chat = client
        .post(format!("{base}/v1/chat/completions"))
        .json(
            &json!({"model": MODEL, "max_tokens": 2, "prompt_logprobs": 2,
                      "messages": [{"role": "user", "content": "report the usage please"}]}),
        )
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    // vLLM's field order: ..., choices, service_tier, system_fingerprint, usage,
    // prompt_logprobs, prompt_token_ids, kv_transfer_params.
    let order: Vec<usize> = [
        "choices",
        "service_tier",
        "system_fingerprint",
        "usage",
        "prompt_logprobs",
        "prompt_token_ids",
        "kv_transfer_params",
    ]
    .iter()
    .map(|key| key_at(&chat, key))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{chat}");
    let chat: Value = serde_json::from_str(&chat).expect("json");
    let prompt_tokens = chat["usage"]["prompt_tokens"].as_u64().expect("prompt");
    assert_prompt_logprobs(&chat["prompt_logprobs"], prompt_tokens, 2);

    let completion = client
        .post(format!("{base}/v1/completions"))
        .json(
            &json!({"model": MODEL, "prompt": "what is the usage", "max_tokens": 2,
                      "prompt_logprobs": 0}),
        )
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    // Completions keep them in the choice, which comes before usage.
    assert!(key_at(&completion, "prompt_logprobs") < key_at(&completion, "usage"));
    let completion: Value = serde_json::from_str(&completion).expect("json");
    assert!(completion.get("prompt_logprobs").is_none());
    let prompt_tokens = completion["usage"]["prompt_tokens"]
        .as_u64()
        .expect("prompt");
    assert_prompt_logprobs(
        &completion["choices"][0]["prompt_logprobs"],
        prompt_tokens,
        0,
    );

    // Not asked for: null, as vLLM sends it.
    let plain: Value = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body("hi", 1))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(plain["prompt_logprobs"].is_null());
    assert!(
        plain
            .as_object()
            .expect("object")
            .contains_key("prompt_logprobs")
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_logprobs_limits_are_vllms() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let client = client();
    let cases = [
        (
            json!({"prompt_logprobs": 1, "stream": true}),
            "BadRequestError",
            "`prompt_logprobs` are not available when `stream=True`.",
        ),
        (
            json!({"prompt_logprobs": -2}),
            "BadRequestError",
            "`prompt_logprobs` must be a positive value or -1. \
             (parameter=prompt_logprobs, value=-2)",
        ),
        (
            json!({"prompt_logprobs": 21}),
            "BadRequestError",
            "Requested prompt logprobs of 21, which is greater than max allowed: 20 \
             (parameter=prompt_logprobs, value=21)",
        ),
        (
            json!({"prompt_logprobs": -1}),
            "BadRequestError",
            "Requested prompt logprobs of 100277, which is greater than max allowed: 20",
        ),
    ];
    for (extra, kind, message) in cases {
        let mut body = json!({"model": MODEL, "prompt": "x", "max_tokens": 1});
        for (key, value) in extra.as_object().expect("object") {
            body[key] = value.clone();
        }
        let (status, error) = error_of(
            client
                .post(format!("{base}/v1/completions"))
                .json(&body)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["error"]["type"], kind, "{body}");
        assert_eq!(error["error"]["param"], "prompt_logprobs");
        let text = error["error"]["message"].as_str().expect("message");
        assert!(text.contains(message), "{text}");
    }
    server.shutdown().await;
}
