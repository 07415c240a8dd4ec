//! Deterministic English-like filler text for request bodies of a given size.
//!
//! Real words in sentences, so the policy filter's token estimate and JSON
//! scanning see what a chat prompt looks like, not one repeated letter.

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "model",
    "request",
    "tenant",
    "cluster",
    "latency",
    "through",
    "between",
    "people",
    "system",
    "report",
    "question",
    "answer",
    "summary",
    "because",
    "service",
    "before",
    "after",
    "during",
    "important",
    "number",
    "several",
    "different",
    "example",
    "following",
    "information",
    "development",
    "government",
    "understand",
    "however",
    "although",
    "describe",
    "explain",
    "carefully",
    "quickly",
    "network",
    "history",
    "problem",
    "solution",
    "customer",
    "document",
    "meeting",
    "project",
    "weather",
    "morning",
    "evening",
    "library",
    "language",
    "translate",
    "compare",
    "measure",
    "improve",
    "consider",
    "remember",
    "available",
    "particular",
];

/// About `bytes` bytes (never more) of sentences, the same for the same size.
pub fn english_like(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes);
    // xorshift64: a fixed seed keeps every run's bodies identical.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut sentence_left = 0u64;
    loop {
        let word = WORDS[(next() % WORDS.len() as u64) as usize];
        let starts_sentence = sentence_left == 0;
        if starts_sentence {
            sentence_left = 6 + next() % 12;
        }
        sentence_left -= 1;
        let ends_sentence = sentence_left == 0;
        // Separator + word + optional full stop.
        let needed = usize::from(!out.is_empty()) + word.len() + usize::from(ends_sentence);
        if out.len() + needed > bytes {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if starts_sentence {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(word);
        }
        if ends_sentence {
            out.push('.');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_close_to_the_size_without_exceeding_it() {
        for size in [0, 1, 100, 1024, 65536] {
            let text = english_like(size);
            assert!(text.len() <= size, "{size}: {}", text.len());
            assert!(text.len() + 20 > size, "{size}: only {}", text.len());
        }
    }

    #[test]
    fn reads_as_sentences_and_is_deterministic() {
        let text = english_like(2000);
        assert_eq!(text, english_like(2000));
        assert!(text.chars().next().is_some_and(char::is_uppercase));
        assert!(text.matches(". ").count() >= 10, "{text}");
        assert!(text.is_ascii());
    }
}
