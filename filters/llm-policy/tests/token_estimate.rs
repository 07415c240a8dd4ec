//! The estimate in `tokens` against tiktoken's cl100k on realistic English.
//!
//! The estimate is a bound (see `tests/token_bound.rs` for adversarial text
//! and o200k), so it is biased high: on ordinary text every sample over 200
//! tokens, the aggregate and one long document must stay within 0.9x-1.5x of
//! the real count (1.15x in aggregate, 0.97x-1.27x per sample in practice).

use std::path::Path;

use llm_policy::tokens;
use tiktoken_rs::CoreBPE;

/// Estimate / real allowed per sample over 200 tokens, in aggregate and on
/// the long document.
const RATIO: std::ops::RangeInclusive<f64> = 0.9..=1.5;

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// `### role` lines split a chat sample into (role, content) messages.
fn messages(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(role) = line.strip_prefix("### ") {
            out.push((role.to_owned(), String::new()));
        } else if let Some((_, content)) = out.last_mut() {
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(line);
        }
    }
    out
}

/// OpenAI's documented count for chat: 3 per message, role + content, 3 to prime the reply.
fn exact_chat(bpe: &CoreBPE, msgs: &[(String, String)]) -> usize {
    msgs.iter()
        .map(|(r, c)| 3 + bpe.encode_ordinary(r).len() + bpe.encode_ordinary(c).len())
        .sum::<usize>()
        + 3
}

fn estimate_chat(msgs: &[(String, String)]) -> u32 {
    msgs.iter()
        .map(|(r, c)| tokens::MESSAGE_OVERHEAD + tokens::text_tokens(r) + tokens::text_tokens(c))
        .sum::<u32>()
        + tokens::REPLY_PRIMING
}

#[test]
fn estimate_tracks_cl100k() {
    let bpe = tiktoken_rs::cl100k_base().unwrap();
    let (mut exact_sum, mut est_sum) = (0usize, 0u64);
    let mut failures = Vec::new();
    for (name, text) in corpus() {
        let (exact, est) = if name.starts_with("chat_") {
            let msgs = messages(&text);
            assert!(!msgs.is_empty(), "{name} has no messages");
            (exact_chat(&bpe, &msgs), estimate_chat(&msgs))
        } else {
            (bpe.encode_ordinary(&text).len(), tokens::text_tokens(&text))
        };
        let err = (f64::from(est) - exact as f64) / exact as f64;
        println!(
            "{name:<24} exact {exact:>5} estimate {est:>5} error {:>+6.1}%",
            err * 100.0
        );
        exact_sum += exact;
        est_sum += u64::from(est);
        if exact > 200 && !RATIO.contains(&(1.0 + err)) {
            failures.push(format!("{name}: {:+.1}%", err * 100.0));
        }
    }
    let agg = (est_sum as f64 - exact_sum as f64) / exact_sum as f64;
    println!(
        "aggregate exact {exact_sum} estimate {est_sum} error {:+.1}%",
        agg * 100.0
    );
    assert!(
        RATIO.contains(&(1.0 + agg)),
        "aggregate error {:+.1}%",
        agg * 100.0
    );
    assert!(
        failures.is_empty(),
        "samples outside 0.9x-1.5x: {failures:?}"
    );
}

/// One long document (every non-chat sample in a row): the error must not
/// grow with length.
#[test]
fn long_document() {
    let bpe = tiktoken_rs::cl100k_base().unwrap();
    let text: Vec<String> = corpus()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("chat_"))
        .map(|(_, t)| t)
        .collect();
    let text = text.join("\n\n");
    let exact = bpe.encode_ordinary(&text).len();
    let est = tokens::text_tokens(&text);
    let err = (f64::from(est) - exact as f64) / exact as f64;
    println!(
        "long document: exact {exact} estimate {est} error {:+.1}%",
        err * 100.0
    );
    assert!(exact > 4000);
    assert!(RATIO.contains(&(1.0 + err)), "{:+.1}%", err * 100.0);
}
