//! `prompt_logprobs`: for every prompt token, how likely the model found it, shaped like vLLM's
//! `list[dict[int, Logprob] | None]`.
//!
//! The mock has no model, so the numbers are made up, but deterministically (the same prompt
//! always gets the same logprobs) and consistently: ranks start at 1, logprobs fall as ranks
//! grow, and one position's probabilities never sum above 1.

use crate::tokenizer::{ORDINARY_TOKENS, PromptTokenizer, TokenId};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// One entry per prompt token; the first is `None` because nothing precedes it.
pub type PromptLogprobs = Vec<Option<PositionLogprobs>>;

/// The logprobs at one prompt position, keyed by token id. The prompt's own token comes first,
/// then the top alternatives by rank: the insertion order of vLLM's dict, kept on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionLogprobs(pub Vec<(TokenId, Logprob)>);

/// vLLM's `Logprob` dataclass.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Logprob {
    pub logprob: f64,
    pub rank: u32,
    pub decoded_token: String,
}

impl Serialize for PositionLogprobs {
    /// JSON object keys must be strings, so ids are written as `"1917"`, as Python's `json` does
    /// with the int keys of vLLM's dict.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (token, logprob) in &self.0 {
            map.serialize_entry(&token.to_string(), logprob)?;
        }
        map.end()
    }
}

/// Logprobs of every prompt token with `top` alternatives per position (vLLM's
/// `prompt_logprobs=N`: the top N, plus the prompt token when it is not among them).
pub fn build(tokenizer: &PromptTokenizer, prompt: &[TokenId], top: u32) -> PromptLogprobs {
    let mut out = Vec::with_capacity(prompt.len());
    if prompt.is_empty() {
        return out;
    }
    out.push(None);
    for (position, &token) in prompt.iter().enumerate().skip(1) {
        out.push(Some(position_logprobs(tokenizer, position, token, top)));
    }
    out
}

/// Rank of the prompt token at a position, drawn from this table: mostly the model's first
/// choice, sometimes not, as for real text.
const PROMPT_TOKEN_RANKS: [u32; 10] = [1, 1, 1, 1, 1, 1, 2, 2, 3, 7];

fn position_logprobs(
    tokenizer: &PromptTokenizer,
    position: usize,
    token: TokenId,
    top: u32,
) -> PositionLogprobs {
    let mut rng = SplitMix64(((position as u64) << 32) ^ u64::from(token));
    // Probabilities fall geometrically with rank, p(k) = first * ratio^(k-1); taking
    // first <= 1 - ratio keeps the whole series, hence any top-N, below 1.
    let ratio = 0.1 + 0.3 * rng.unit();
    let first = (1.0 - ratio) * (0.5 + 0.5 * rng.unit());
    let logprob_at = |rank: u32| first.ln() + f64::from(rank - 1) * ratio.ln();

    let rank = PROMPT_TOKEN_RANKS[(rng.next() % PROMPT_TOKEN_RANKS.len() as u64) as usize];
    let mut entries = vec![(
        token,
        Logprob {
            logprob: logprob_at(rank),
            rank,
            decoded_token: tokenizer.decode_token(token).unwrap_or_default(),
        },
    )];
    for alt_rank in (1..=top).filter(|&r| r != rank) {
        let (alt, decoded_token) = loop {
            let candidate = (rng.next() % u64::from(ORDINARY_TOKENS)) as TokenId;
            if entries.iter().any(|(id, _)| *id == candidate) {
                continue;
            }
            if let Some(text) = tokenizer.decode_token(candidate) {
                break (candidate, text);
            }
        };
        entries.push((
            alt,
            Logprob {
                logprob: logprob_at(alt_rank),
                rank: alt_rank,
                decoded_token,
            },
        ));
    }
    PositionLogprobs(entries)
}

/// A tiny deterministic generator (SplitMix64): enough to vary made-up numbers per position
/// without a dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> PromptTokenizer {
        PromptTokenizer::cl100k().expect("vocabulary loads")
    }

    #[test]
    fn first_position_is_null_and_the_prompt_token_comes_first() {
        let tokenizer = tokenizer();
        let prompt = tokenizer.encode("show me the usage numbers");
        let logprobs = build(&tokenizer, &prompt, 3);
        assert_eq!(logprobs.len(), prompt.len());
        assert!(logprobs[0].is_none());
        for (position, entry) in logprobs.iter().enumerate().skip(1) {
            let PositionLogprobs(entries) = entry.as_ref().expect("set after the first");
            assert_eq!(entries[0].0, prompt[position]);
            let prompt_rank = entries[0].1.rank;
            // The top 3, plus the prompt token when it ranks below them.
            let expected = if prompt_rank <= 3 { 3 } else { 4 };
            assert_eq!(entries.len(), expected);
            let mut ranks: Vec<u32> = entries.iter().map(|(_, l)| l.rank).collect();
            ranks.sort_unstable();
            ranks.dedup();
            assert_eq!(ranks.len(), entries.len(), "ranks are distinct");
            let total: f64 = entries.iter().map(|(_, l)| l.logprob.exp()).sum();
            assert!(total <= 1.0, "probabilities sum to {total}");
            for pair in entries[1..].windows(2) {
                assert!(pair[0].1.rank < pair[1].1.rank);
                assert!(pair[0].1.logprob > pair[1].1.logprob);
            }
        }
        let usage = prompt
            .iter()
            .position(|&t| tokenizer.decode_token(t).as_deref() == Some(" usage"))
            .expect("\" usage\" is one token");
        let PositionLogprobs(entries) = logprobs[usage].as_ref().expect("entry");
        assert_eq!(entries[0].1.decoded_token, " usage");
    }

    #[test]
    fn deterministic_and_serialised_with_string_keys_in_order() {
        let tokenizer = tokenizer();
        let prompt = tokenizer.encode("hello world");
        let logprobs = build(&tokenizer, &prompt, 0);
        assert_eq!(logprobs, build(&tokenizer, &prompt, 0));
        let json = serde_json::to_string(&logprobs).expect("serialises");
        let world = &logprobs[1].as_ref().expect("entry").0[0].1;
        assert_eq!(
            json,
            format!(
                r#"[null,{{"1917":{{"logprob":{},"rank":{},"decoded_token":" world"}}}}]"#,
                serde_json::to_string(&world.logprob).expect("float"),
                world.rank
            )
        );
    }
}
