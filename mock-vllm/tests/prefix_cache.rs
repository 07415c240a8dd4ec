//! Prefix cache isolation: the same prompt hits only under the same `cache_salt`.

mod common;

use common::*;
use serde_json::{Value, json};

/// A prompt of a few hundred tokens, so it spans many 16-token blocks.
fn long_prompt() -> String {
    "The quick brown fox jumps over the lazy dog while the tenant gateway keeps watch. ".repeat(20)
}

async fn cached_tokens(client: &reqwest::Client, base: &str, salt: Option<&str>) -> (u64, u64) {
    let mut body = chat_body(&long_prompt(), 2);
    if let Some(salt) = salt {
        body["cache_salt"] = json!(salt);
    }
    let response: Value = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let usage = &response["usage"];
    (
        usage["prompt_tokens"].as_u64().expect("prompt_tokens"),
        usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .expect("cached_tokens"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_salt_hits_different_salts_never_share() {
    let server = start(config(4, 2)).await;
    let base = server.base_url();
    let client = client();

    let (prompt_tokens, first) = cached_tokens(&client, &base, Some("tenant-a")).await;
    assert!(prompt_tokens > 100, "prompt is {prompt_tokens} tokens");
    assert_eq!(first, 0, "cold cache");
    let (_, again) = cached_tokens(&client, &base, Some("tenant-a")).await;
    assert!(again > 0, "same prompt, same salt must hit");
    assert_eq!(again % 16, 0, "hits are whole blocks");
    assert!(again < prompt_tokens, "the last token is always recomputed");
    assert_eq!(again, (prompt_tokens - 1) / 16 * 16);

    let (_, other_salt) = cached_tokens(&client, &base, Some("tenant-b")).await;
    assert_eq!(other_salt, 0, "a different salt shares nothing");
    let (_, unsalted) = cached_tokens(&client, &base, None).await;
    assert_eq!(unsalted, 0, "no salt does not share with a salted prompt");
    let (_, unsalted_again) = cached_tokens(&client, &base, None).await;
    assert!(
        unsalted_again > 0,
        "unsalted requests share among themselves"
    );

    assert!(metric(&client, &base, "vllm:prefix_cache_hits_total").await >= (again * 2) as f64);
    assert!(
        metric(&client, &base, "vllm:prefix_cache_queries_total").await
            >= (prompt_tokens * 5) as f64
    );

    // The debug log shows what each request got from the cache.
    let log: Vec<Value> = client
        .get(format!("{base}/debug/requests"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let cached: Vec<u64> = log
        .iter()
        .map(|r| r["cached_tokens"].as_u64().expect("set after admission"))
        .collect();
    assert_eq!(cached, [0, again, 0, 0, unsalted_again]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_clears_the_prefix_cache() {
    let server = start(config(4, 2)).await;
    let base = server.base_url();
    let client = client();
    cached_tokens(&client, &base, Some("s")).await;
    let status = client
        .post(format!("{base}/debug/reset"))
        .send()
        .await
        .expect("reset")
        .status();
    assert_eq!(status, 204);
    let (_, after_reset) = cached_tokens(&client, &base, Some("s")).await;
    assert_eq!(after_reset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_eviction_makes_room_for_new_prompts() {
    let tokenizer = mock_vllm::tokenizer::PromptTokenizer::cl100k().expect("tokenizer");
    let message =
        serde_json::from_value(json!({"role": "user", "content": long_prompt()})).expect("message");
    let prompt_tokens = tokenizer.encode_chat(&[message]).len() as u64;
    let full_hit = (prompt_tokens - 1) / 16 * 16;
    // Room for one request and a half: the second prompt must evict part of the first.
    let needed = (prompt_tokens as usize + 2).div_ceil(16);
    let server = start(mock_vllm::MockConfig {
        num_gpu_blocks: needed + needed / 2,
        ..config(4, 2)
    })
    .await;
    let base = server.base_url();
    let client = client();
    assert_eq!(
        cached_tokens(&client, &base, Some("a")).await,
        (prompt_tokens, 0)
    );
    assert_eq!(
        cached_tokens(&client, &base, Some("a")).await.1,
        full_hit,
        "fits once"
    );
    cached_tokens(&client, &base, Some("b")).await;
    let (_, a_again) = cached_tokens(&client, &base, Some("a")).await;
    assert!(a_again > 0, "the prefix of `a` survives");
    assert!(
        a_again < full_hit,
        "the tail of `a` was evicted (hit {a_again})"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_logprobs_requests_read_no_cache_but_fill_it() {
    let server = start(config(4, 2)).await;
    let base = server.base_url();
    let client = client();
    let ask = |prompt_logprobs: Option<u32>| {
        let mut body = chat_body(&long_prompt(), 2);
        if let Some(n) = prompt_logprobs {
            body["prompt_logprobs"] = json!(n);
        }
        let request = client
            .post(format!("{base}/v1/chat/completions"))
            .json(&body);
        async move {
            let body: Value = request
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("json");
            body["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .expect("cached_tokens")
        }
    };
    // vLLM computes every prompt position for prompt logprobs, so it skips the lookup...
    assert_eq!(ask(Some(1)).await, 0);
    assert_eq!(ask(Some(0)).await, 0, "even a cached prompt is recomputed");
    // ...but the blocks it computed are cached for the next request.
    assert!(ask(None).await > 0);
    server.shutdown().await;
}
