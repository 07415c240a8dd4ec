//! Behaviour checked against vLLM 0.32 (its source and `tools/vllm/OBSERVED.md`, captured from
//! a real vLLM 0.32.0): cache_salt rules, context-length rules, default `max_tokens`, ids and
//! `X-Request-Id`, error bodies, `/version`, and the metrics exposition.

mod common;

use common::*;
use serde_json::{Value, json};

/// A replica with a 64-token context, so that the length rules are cheap to reach.
async fn small() -> mock_vllm::MockServer {
    start(mock_vllm::MockConfig {
        max_model_len: 64,
        ..config(4, 1)
    })
    .await
}

async fn post(base: &str, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    post_with(base, path, body, &[]).await
}

async fn post_with(
    base: &str,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client().post(format!("{base}{path}")).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

fn bad_request(message: &str, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": "BadRequestError", "param": param, "code": 400}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_salt_is_validated_like_vllm() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let shape = "Parameter 'cache_salt' must be a non-empty string if provided. \
                 (parameter=cache_salt)";
    let content = "Parameter 'cache_salt' must be at most 128 characters and must not contain \
                   '@', '/', '\\\\', or NUL. (parameter=cache_salt)";
    let cases = [
        (json!("a/b"), Some(content)),
        (json!("a@b"), Some(content)),
        (json!("x".repeat(129)), Some(content)),
        (json!("x".repeat(1000)), Some(content)),
        (json!(""), Some(shape)),
        (json!(123), Some(shape)),
        (json!("x".repeat(128)), None),
        (json!(null), None),
        (json!("tenant-42"), None),
    ];
    for (salt, refusal) in cases {
        for (path, mut body) in [
            ("/v1/chat/completions", chat_body("Hi", 2)),
            (
                "/v1/completions",
                json!({"model": MODEL, "prompt": "Hi", "max_tokens": 2}),
            ),
            (
                "/v1/responses",
                json!({"model": MODEL, "input": "Hi", "max_output_tokens": 2}),
            ),
        ] {
            body["cache_salt"] = salt.clone();
            let (status, _, answer) = post(&base, path, body).await;
            match refusal {
                Some(message) => {
                    assert_eq!(status, 400, "{path} {salt}");
                    assert_eq!(answer, bad_request(message, Some("cache_salt")), "{path}");
                }
                None => assert_eq!(status, 200, "{path} {salt}: {answer}"),
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_is_clamped_to_the_context_and_refused_only_past_it() {
    let server = small().await;
    let base = server.base_url();

    // max_tokens alone over max_model_len: refused before anything is tokenized.
    let (status, _, body) = post(&base, "/v1/chat/completions", chat_body("Hi", 65)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        bad_request(
            "max_tokens=65 cannot be greater than max_model_len=64. Please request fewer \
             output tokens. (parameter=max_tokens, value=65)",
            Some("max_tokens"),
        )
    );
    let mut body = chat_body("Hi", 1);
    body["max_completion_tokens"] = json!(100);
    let (status, _, body) = post(&base, "/v1/chat/completions", body).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "max_completion_tokens");

    // prompt + max_tokens over the context: answered, cut at the end of the context.
    let (status, _, body) = post(&base, "/v1/chat/completions", chat_body("Hi", 64)).await;
    assert_eq!(status, 200, "{body}");
    let prompt = body["usage"]["prompt_tokens"].as_u64().expect("prompt");
    assert_eq!(body["usage"]["completion_tokens"], 64 - prompt);
    assert_eq!(body["usage"]["total_tokens"], 64);
    assert_eq!(body["choices"][0]["finish_reason"], "length");

    // Exact boundaries with token-id prompts.
    let ids = |n: usize| json!(vec![100; n]);
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        json!({"model": MODEL, "prompt": ids(63), "max_tokens": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 1);
    for max_tokens in [json!(null), json!(1)] {
        let (status, _, body) = post(
            &base,
            "/v1/completions",
            json!({"model": MODEL, "prompt": ids(64), "max_tokens": max_tokens}),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            bad_request(
                "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
                Some("max_tokens"),
            )
        );
    }
    let too_long = |n: usize, qualifier: &str| {
        bad_request(
            &format!(
                "This model's maximum context length is 64 tokens. However, your prompt \
                 contains {qualifier}{n} input tokens, which exceeds this limit even without \
                 any output tokens. Please reduce the length of the input prompt. \
                 (parameter=input_tokens, value={n})"
            ),
            Some("input_tokens"),
        )
    };
    let (_, _, body) = post(
        &base,
        "/v1/completions",
        json!({"model": MODEL, "prompt": ids(70), "max_tokens": 1}),
    )
    .await;
    assert_eq!(body, too_long(70, ""), "token ids are counted whole");
    // Text is tokenized only up to max_model_len + 1 tokens.
    let long = "word ".repeat(200);
    let (status, _, body) = post(&base, "/v1/chat/completions", chat_body(&long, 10)).await;
    assert_eq!(status, 400);
    assert_eq!(body, too_long(65, "at least "));
    let mut streamed = chat_body(&long, 10);
    streamed["stream"] = json!(true);
    let (status, headers, body) = post(&base, "/v1/chat/completions", streamed).await;
    assert_eq!(status, 400, "refused before any stream starts");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body, too_long(65, "at least "));
    let (_, _, body) = post(
        &base,
        "/v1/completions",
        json!({"model": MODEL, "prompt": long, "max_tokens": 1}),
    )
    .await;
    assert_eq!(body, too_long(65, "at least "));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn omitted_max_tokens_takes_vllms_defaults() {
    let server = small().await;
    let base = server.base_url();
    let (_, _, chat) = post(
        &base,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    // No model named: the served one answers.
    assert_eq!(chat["model"], MODEL);
    let prompt = chat["usage"]["prompt_tokens"].as_u64().expect("prompt");
    assert_eq!(
        chat["usage"]["completion_tokens"],
        64 - prompt,
        "the rest of the context"
    );
    assert_eq!(chat["choices"][0]["finish_reason"], "length");

    let (_, _, completion) = post(&base, "/v1/completions", json!({"prompt": "Hi"})).await;
    assert_eq!(
        completion["usage"]["completion_tokens"], 16,
        "completions default to 16"
    );
    let (_, _, completion) = post(
        &base,
        "/v1/completions",
        json!({"prompt": "Hi", "max_tokens": null}),
    )
    .await;
    assert_eq!(
        completion["usage"]["completion_tokens"], 16,
        "null is 16 too"
    );

    let (_, _, response) = post(&base, "/v1/responses", json!({"input": "Hi"})).await;
    let input = response["usage"]["input_tokens"].as_u64().expect("input");
    assert_eq!(response["usage"]["output_tokens"], 64 - input);
    assert_eq!(response["max_output_tokens"], 64 - input);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_report_max_model_len_and_version_is_vllms() {
    let server = start(mock_vllm::MockConfig {
        max_model_len: 4096,
        models: vec![MODEL.into(), "alias".into()],
        ..config(4, 1)
    })
    .await;
    let base = server.base_url();
    let models: Value = client()
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let cards = models["data"].as_array().expect("data");
    assert_eq!(cards.len(), 2);
    for card in cards {
        assert_eq!(card["max_model_len"], 4096);
        assert_eq!(card["owned_by"], "vllm");
        assert!(card["parent"].is_null());
        let permission = &card["permission"][0];
        assert!(
            permission["id"]
                .as_str()
                .expect("id")
                .starts_with("modelperm-")
        );
        assert_eq!(permission["object"], "model_permission");
        assert_eq!(permission["allow_sampling"], true);
        assert_eq!(permission["organization"], "*");
        assert_eq!(permission["is_blocking"], false);
    }
    // Every alias answers under the first served name, as vLLM's `model_name()` does.
    let (status, _, body) = post(
        &base,
        "/v1/completions",
        json!({"model": "alias", "prompt": "Hi", "max_tokens": 1}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["model"], MODEL);

    let response = client()
        .get(format!("{base}/version"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.text().await.expect("text"),
        r#"{"version":"0.32.0"}"#
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_vllms_bodies() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let validation = |message: &str, param: Value| json!({"error": {"message": message, "type": "Bad Request", "param": param, "code": 400}});

    let (status, _, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": {"message": format!(
                   "The model `no-such-model` does not exist. Valid aliases: {MODEL}."),
               "type": "NotFoundError", "param": "model", "code": 404}})
    );
    let (_, _, body) = post(&base, "/v1/chat/completions", json!({"model": MODEL})).await;
    assert_eq!(
        body,
        validation(
            "1 validation error:\n  {'type': 'missing', 'loc': 'body.messages', 'msg': 'Field \
             required', 'input': '<dict of 1 items>'}",
            json!("body.messages"),
        )
    );
    let (_, _, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [], "max_tokens": 2}),
    )
    .await;
    assert_eq!(
        body,
        bad_request(
            "Cannot apply chat template to an empty conversation. Provide at least one message.",
            None,
        )
    );
    for (value, shown) in [(json!(-1), "-1.0"), (json!(-0.5), "-0.5")] {
        let mut request = chat_body("Hi", 2);
        request["temperature"] = value;
        let (_, _, body) = post(&base, "/v1/chat/completions", request).await;
        assert_eq!(
            body,
            bad_request(
                &format!(
                    "temperature must be non-negative, got {shown}. (parameter=temperature, \
                     value={shown})"
                ),
                Some("temperature"),
            )
        );
    }
    for max_tokens in [0, -1] {
        let (_, _, body) = post(
            &base,
            "/v1/chat/completions",
            json!({
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens}),
        )
        .await;
        assert_eq!(
            body,
            bad_request(
                &format!(
                    "max_tokens must be at least 1, got {max_tokens}. (parameter=max_tokens, \
                     value={max_tokens})"
                ),
                Some("max_tokens"),
            )
        );
    }

    let raw = |content_type: Option<&'static str>, payload: &'static str| {
        let mut request = client()
            .post(format!("{base}/v1/chat/completions"))
            .body(payload);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.expect("send");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("json"),
            )
        }
    };
    let (status, body) = raw(
        Some("application/json"),
        r#"{"model": "tiny-llama", "messages": ["#,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        validation(
            "1 validation error:\n  {'type': 'json_invalid', 'loc': 'body.37', 'msg': 'JSON \
             decode error', 'input': '<dict of 0 items>', 'ctx': {'error': 'Expecting value'}}",
            json!("body.37"),
        )
    );
    let (_, body) = raw(Some("application/json"), "").await;
    assert_eq!(
        body,
        validation(
            "1 validation error:\n  {'type': 'missing', 'loc': 'body', 'msg': 'Field required', \
             'input': 'None'}",
            json!("body"),
        )
    );
    let (_, body) = raw(Some("text/plain"), r#"{"messages": []}"#).await;
    assert_eq!(
        body,
        validation(
            "1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
            Value::Null,
        )
    );

    // A replica serving no embedding model has no embedding route, as a vLLM generation server.
    let (status, _, body) = post(&base, "/v1/embeddings", json!({"input": "hello"})).await;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_routes_and_headers_are_vllms() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let client = client();
    for path in ["/health", "/ping"] {
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("content-type").is_none());
        assert_eq!(response.headers()["server"], "uvicorn");
        assert_eq!(response.headers()["vary"], "Origin");
        assert_eq!(response.text().await.expect("text"), "");
    }
    for request in [
        client.head(format!("{base}/health")),
        client.post(format!("{base}/health")),
    ] {
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "GET");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_request_id_names_the_response_and_is_echoed_only_when_enabled() {
    let server = start(mock_vllm::MockConfig {
        embedding_models: vec!["bge".into()],
        ..config(4, 1)
    })
    .await;
    let base = server.base_url();
    let rid = [("x-request-id", "abc123")];
    let (_, headers, chat) =
        post_with(&base, "/v1/chat/completions", chat_body("Hi", 2), &rid).await;
    assert_eq!(chat["id"], "chatcmpl-abc123");
    assert!(headers.get("x-request-id").is_none(), "off by default");
    let (_, _, completion) = post_with(
        &base,
        "/v1/completions",
        json!({"prompt": "Hi", "max_tokens": 1}),
        &rid,
    )
    .await;
    assert_eq!(completion["id"], "cmpl-abc123");
    let (_, _, embedding) = post_with(
        &base,
        "/v1/embeddings",
        json!({"model": "bge", "input": "Hi"}),
        &rid,
    )
    .await;
    assert_eq!(embedding["id"], "embd-abc123");
    let mut stream = chat_body("Hi", 2);
    stream["stream"] = json!(true);
    let response = client()
        .post(format!("{base}/v1/chat/completions"))
        .header("x-request-id", "abc123")
        .json(&stream)
        .send()
        .await
        .expect("send");
    let events = read_sse(response, usize::MAX).await;
    for event in &events[..events.len() - 1] {
        assert_eq!(event.json()["id"], "chatcmpl-abc123");
    }
    // vLLM's body extension names it too, when no header does.
    let mut named = chat_body("Hi", 2);
    named["request_id"] = json!("body-req-1");
    let (_, _, body) = post(&base, "/v1/chat/completions", named).await;
    assert_eq!(body["id"], "chatcmpl-body-req-1");
    server.shutdown().await;

    let server = start(mock_vllm::MockConfig {
        enable_request_id_headers: true,
        ..config(4, 1)
    })
    .await;
    let base = server.base_url();
    let (_, headers, _) = post_with(&base, "/v1/chat/completions", chat_body("Hi", 2), &rid).await;
    assert_eq!(headers["x-request-id"], "abc123");
    let (_, headers, body) = post(&base, "/v1/chat/completions", chat_body("Hi", 2)).await;
    let fresh = headers["x-request-id"].to_str().expect("ascii");
    assert!(
        fresh.len() == 32 && fresh.chars().all(|c| c.is_ascii_hexdigit()),
        "{fresh}"
    );
    assert_ne!(
        body["id"],
        format!("chatcmpl-{fresh}"),
        "unrelated to the response id"
    );
    let models = client()
        .get(format!("{base}/v1/models"))
        .header("x-request-id", "m-1")
        .send()
        .await
        .expect("send");
    assert_eq!(models.headers()["x-request-id"], "m-1");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_clients_exposition() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    post(&base, "/v1/chat/completions", chat_body("Hi", 2)).await;
    let response = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.expect("text");
    let labels = format!("engine=\"0\",model_name=\"{MODEL}\"");
    for line in [
        "# TYPE vllm:num_requests_running gauge".to_string(),
        "# TYPE vllm:prompt_tokens_total counter".to_string(),
        "# TYPE vllm:prompt_tokens_created gauge".to_string(),
        "# TYPE vllm:request_success_total counter".to_string(),
        "# TYPE vllm:e2e_request_latency_seconds histogram".to_string(),
        "# TYPE vllm:e2e_request_latency_seconds_created gauge".to_string(),
        format!("vllm:num_requests_waiting{{{labels}}} 0.0"),
        format!("vllm:num_requests_waiting_by_reason{{{labels},reason=\"capacity\"}} 0.0"),
        format!("vllm:num_requests_waiting_by_reason{{{labels},reason=\"deferred\"}} 0.0"),
        format!("vllm:generation_tokens_total{{{labels}}} 2.0"),
        format!(
            "vllm:request_success_total{{engine=\"0\",finished_reason=\"length\",model_name=\"{MODEL}\"}} 1.0"
        ),
        format!(
            "vllm:request_success_total{{engine=\"0\",finished_reason=\"stop\",model_name=\"{MODEL}\"}} 0.0"
        ),
        format!("vllm:e2e_request_latency_seconds_count{{{labels}}} 1.0"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
    // The names the gateway's scraper reads are all there, once each per engine.
    for name in [
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
    ] {
        let samples = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .count();
        assert_eq!(samples, 1, "{name}");
    }
    // Other methods reach prometheus_client's own app, which answers the 0.0.4 type.
    let response = client()
        .post(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_come_as_floats_or_base64_and_refuse_dimensions() {
    let server = start(mock_vllm::MockConfig {
        embedding_models: vec!["bge".into()],
        ..config(4, 1)
    })
    .await;
    let base = server.base_url();
    let ask = |format: Value| {
        let base = base.clone();
        async move {
            let body = json!({"model": "bge", "input": "hello", "encoding_format": format});
            post(&base, "/v1/embeddings", body).await
        }
    };
    let (status, _, floats) = ask(json!("float")).await;
    assert_eq!(status, 200, "{floats}");
    let floats: Vec<f32> = floats["data"][0]["embedding"]
        .as_array()
        .expect("floats")
        .iter()
        .map(|v| v.as_f64().expect("float") as f32)
        .collect();
    // Found by the conformance suite: base64 was answered as floats.
    let (status, _, encoded) = ask(json!("base64")).await;
    assert_eq!(status, 200, "{encoded}");
    let text = encoded["data"][0]["embedding"]
        .as_str()
        .expect("base64 text");
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    let bytes = BASE64_STANDARD.decode(text).expect("valid base64");
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, floats, "little-endian f32s");
    let (status, _, refused) = post(
        &base,
        "/v1/embeddings",
        json!({"model": "bge", "input": "hello", "dimensions": 8}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["type"], "BadRequestError");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Matryoshka")),
        "{refused}"
    );
    server.shutdown().await;
}
