//! The Responses API: vLLM's response object and stream events, and a request costing what the
//! same chat costs on `/v1/chat/completions`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::poll::eventually_async as wait_until;

const INSTRUCTIONS: &str = "You are a terse assistant that answers in one line.";

/// A user message long enough to span several 16-token blocks.
fn question() -> String {
    "Which queueing discipline does the gateway use for tenants under load? ".repeat(4)
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> Value {
    let response = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

/// Prompt tokens of the chat `[system: INSTRUCTIONS, user: question()]`.
async fn chat_prompt_tokens(client: &reqwest::Client, base: &str, salt: &str) -> u64 {
    let chat = post(
        client,
        base,
        "/v1/chat/completions",
        &json!({"model": MODEL, "max_tokens": 1, "cache_salt": salt, "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": question()},
        ]}),
    )
    .await;
    chat["usage"]["prompt_tokens"]
        .as_u64()
        .expect("prompt_tokens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_object_has_vllms_shape_and_chats_cost() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let client = client();
    let prompt_tokens = chat_prompt_tokens(&client, &base, "chat-only").await;

    let body = post(
        &client,
        &base,
        "/v1/responses",
        &json!({"model": MODEL, "instructions": INSTRUCTIONS, "input": question(),
                "max_output_tokens": 5, "cache_salt": "tenant-r"}),
    )
    .await;
    let id = body["id"].as_str().expect("id");
    // vLLM: `resp_` and its 16-hex-digit random_uuid().
    assert!(id.starts_with("resp_") && id.len() == 21, "{id}");
    assert!(body["created_at"].as_u64().expect("created_at") > 1_600_000_000);
    let output = body["output"].as_array().expect("output");
    assert_eq!(output.len(), 1);
    let message_id = output[0]["id"].as_str().expect("message id");
    assert!(message_id.starts_with("msg_"), "{message_id}");
    let text = output[0]["content"][0]["text"].as_str().expect("text");
    assert_eq!(text.split_whitespace().count(), 5);
    assert_eq!(
        body,
        json!({
            "id": id,
            "created_at": body["created_at"],
            // The mock always stops at max_output_tokens, which vLLM reports this way.
            "incomplete_details": {"reason": "max_output_tokens"},
            "instructions": INSTRUCTIONS,
            "metadata": null,
            "model": MODEL,
            "object": "response",
            "output": [{
                "id": message_id,
                "content": [{"annotations": [], "text": text, "type": "output_text",
                             "logprobs": null}],
                "role": "assistant",
                "status": "completed",
                "type": "message",
                "phase": null,
            }],
            "parallel_tool_calls": true,
            "temperature": 1.0,
            // vLLM reports `none` for a request without tools.
            "tool_choice": "none",
            "tools": [],
            "top_p": 1.0,
            "background": false,
            "max_output_tokens": 5,
            "max_tool_calls": null,
            "previous_response_id": null,
            "prompt": null,
            "reasoning": null,
            "service_tier": "auto",
            "status": "incomplete",
            "text": null,
            "top_logprobs": null,
            "truncation": "disabled",
            "usage": {
                "input_tokens": prompt_tokens,
                // The full 16-token blocks of the prompt were written to the cache.
                "input_tokens_details": {"cached_tokens": 0,
                                         "cache_write_tokens": prompt_tokens / 16 * 16,
                                         "input_tokens_per_turn": [],
                                         "cached_tokens_per_turn": []},
                "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 0, "tool_output_tokens": 0,
                                          "output_tokens_per_turn": [],
                                          "tool_output_tokens_per_turn": []},
                "total_tokens": prompt_tokens + 5,
            },
            "user": null,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "kv_transfer_params": null,
            "ec_transfer_params": null,
            "input_messages": null,
            "output_messages": null,
        })
    );

    // Same prompt, same salt: the prefix cache serves it, as it would a chat.
    let again = post(
        &client,
        &base,
        "/v1/responses",
        &json!({"model": MODEL, "instructions": INSTRUCTIONS, "input": question(),
                "max_output_tokens": 5, "cache_salt": "tenant-r"}),
    )
    .await;
    let full_blocks = (prompt_tokens - 1) / 16 * 16;
    assert!(full_blocks > 0);
    assert_eq!(
        again["usage"]["input_tokens_details"]["cached_tokens"],
        full_blocks
    );
    // A chat with that salt hits the blocks the Responses requests cached: one template.
    let chat = post(
        &client,
        &base,
        "/v1/chat/completions",
        &json!({"model": MODEL, "max_tokens": 1, "cache_salt": "tenant-r", "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": question()},
        ]}),
    )
    .await;
    assert_eq!(
        chat["usage"]["prompt_tokens_details"]["cached_tokens"],
        full_blocks
    );

    // The debug log shows Responses requests like the others.
    let log: Vec<Value> = client
        .get(format!("{base}/debug/requests"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let responses: Vec<&Value> = log
        .iter()
        .filter(|r| r["path"] == "/v1/responses")
        .collect();
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0]["body"]["cache_salt"], "tenant-r");
    assert_eq!(responses[0]["cached_tokens"], 0);
    assert_eq!(responses[1]["cached_tokens"], full_blocks);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_items_cost_what_the_same_chat_messages_cost() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let client = client();
    let chat = post(
        &client,
        &base,
        "/v1/chat/completions",
        &json!({"model": MODEL, "max_tokens": 2, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ]}),
    )
    .await;
    let response = post(
        &client,
        &base,
        "/v1/responses",
        &json!({"model": MODEL, "max_output_tokens": 2, "instructions": "be brief", "input": [
            {"role": "user", "content": "first question"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "first answer"}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "second question"}]},
        ]}),
    )
    .await;
    assert_eq!(
        response["usage"]["input_tokens"],
        chat["usage"]["prompt_tokens"]
    );
    assert_eq!(response["usage"]["output_tokens"], 2);
    assert_eq!(response["max_output_tokens"], 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_vllms_events_in_order_and_usage_at_the_end() {
    let server = start(config(4, 20)).await;
    let base = server.base_url();
    let client = client();
    let prompt_tokens = chat_prompt_tokens(&client, &base, "chat-only").await;
    let response = client
        .post(format!("{base}/v1/responses"))
        .json(
            &json!({"model": MODEL, "instructions": INSTRUCTIONS, "input": question(),
                      "max_output_tokens": 6, "stream": true}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let events = read_named_sse(response, usize::MAX).await;

    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(["response.output_text.delta"; 6]);
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected, "no [DONE] either");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.data["type"], event.event, "the data names its event");
        assert_eq!(event.data["sequence_number"], i, "{:?}", event.data);
    }

    let created = &events[0].data["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    assert!(created["usage"].is_null());
    assert_eq!(events[1].data["response"], *created);
    let id = created["id"].as_str().expect("id");

    let added = &events[2].data;
    let item_id = added["item"]["id"].as_str().expect("item id");
    assert_eq!(
        *added,
        json!({"item": {"id": item_id, "content": [], "role": "assistant",
                        "status": "in_progress", "type": "message", "phase": null},
               "output_index": 0, "sequence_number": 2, "type": "response.output_item.added"})
    );
    assert_eq!(
        events[3].data,
        json!({"content_index": 0, "item_id": item_id, "output_index": 0,
               "part": {"annotations": [], "text": "", "type": "output_text", "logprobs": []},
               "sequence_number": 3, "type": "response.content_part.added"})
    );
    let deltas = &events[4..10];
    for delta in deltas {
        assert_eq!(delta.data["item_id"], item_id);
        assert_eq!(delta.data["logprobs"], json!([]));
        assert_eq!(delta.data["output_index"], 0);
        assert_eq!(delta.data["content_index"], 0);
    }
    let text: String = deltas
        .iter()
        .map(|d| d.data["delta"].as_str().expect("delta"))
        .collect();
    // Tokens arrive as the engine makes them: 6 steps of 20 ms.
    assert!(deltas[5].at - deltas[0].at >= Duration::from_millis(60));

    assert_eq!(events[10].data["text"], text);
    assert_eq!(
        events[11].data["part"],
        json!({"annotations": [], "text": text, "type": "output_text", "logprobs": null})
    );
    let done_item = &events[12].data["item"];
    assert_eq!(done_item["status"], "completed");
    assert_eq!(done_item["id"], item_id);
    assert_eq!(done_item["content"][0]["text"], text);

    let completed = &events[13].data["response"];
    assert_eq!(completed["id"], id);
    assert_eq!(completed["status"], "incomplete");
    assert_eq!(completed["output"], json!([done_item]));
    assert_eq!(
        completed["usage"],
        json!({"input_tokens": prompt_tokens,
               "input_tokens_details": {"cached_tokens": 0,
                                        "cache_write_tokens": prompt_tokens / 16 * 16,
                                        "input_tokens_per_turn": [],
                                        "cached_tokens_per_turn": []},
               "output_tokens": 6,
               "output_tokens_details": {"reasoning_tokens": 0, "tool_output_tokens": 0,
                                         "output_tokens_per_turn": [],
                                         "tool_output_tokens_per_turn": []},
               "total_tokens": prompt_tokens + 6})
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_response_stream_frees_its_slot() {
    let server = start(config(1, 10)).await;
    let base = server.base_url();
    let client = client();
    let response = client
        .post(format!("{base}/v1/responses"))
        .json(
            &json!({"model": MODEL, "input": "go on forever", "max_output_tokens": 10_000,
                      "stream": true}),
        )
        .send()
        .await
        .expect("send");
    let mut events = Vec::new();
    let mut body = response.bytes_stream();
    use futures_util::StreamExt;
    // The opening events, then the first token.
    while events.len() < 2 {
        events.push(body.next().await.expect("chunk").expect("ok"));
    }
    assert_eq!(server.gauges().running, 1);
    drop(body);
    assert!(
        wait_until(Duration::from_secs(1), || async {
            server.gauges().running == 0
        })
        .await,
        "running = {}",
        server.gauges().running
    );
    assert_eq!(server.gauges().kv_cache_usage, 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_match_vllm_without_a_response_store() {
    let server = start(config(4, 1)).await;
    let base = server.base_url();
    let client = client();
    let cases = [
        (
            json!({"model": "gpt-nope", "input": "x"}),
            404,
            "NotFoundError",
            "model",
        ),
        (
            json!({"model": MODEL, "input": "x", "previous_response_id": "resp_123"}),
            404,
            "invalid_request_error",
            "response_id",
        ),
        (
            json!({"model": MODEL, "input": "x", "background": true}),
            400,
            "invalid_request_error",
            "background",
        ),
    ];
    for (body, status, kind, param) in cases {
        let response = client
            .post(format!("{base}/v1/responses"))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), status, "{body}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["type"], kind, "{error}");
        assert_eq!(error["error"]["param"], param, "{error}");
        assert_eq!(error["error"]["code"], status);
    }
    let error: Value = client
        .post(format!("{base}/v1/responses"))
        .json(&json!({"model": MODEL, "input": "x", "previous_response_id": "resp_123"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        error["error"]["message"],
        "Response with id 'resp_123' not found."
    );
    server.shutdown().await;
}
