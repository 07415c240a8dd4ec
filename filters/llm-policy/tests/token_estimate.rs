//! The estimate in `tokens` against tiktoken's cl100k on realistic English.

use std::path::Path;

use llm_policy::tokens;
use tiktoken_rs::CoreBPE;

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
        if exact > 200 && err.abs() > 0.15 {
            failures.push(format!("{name}: {:+.1}%", err * 100.0));
        }
    }
    let agg = (est_sum as f64 - exact_sum as f64) / exact_sum as f64;
    println!(
        "aggregate exact {exact_sum} estimate {est_sum} error {:+.1}%",
        agg * 100.0
    );
    assert!(agg.abs() <= 0.15, "aggregate error {:+.1}%", agg * 100.0);
    assert!(
        failures.is_empty(),
        "samples off by more than 15%: {failures:?}"
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
    assert!(err.abs() <= 0.15, "{:+.1}%", err * 100.0);
}
