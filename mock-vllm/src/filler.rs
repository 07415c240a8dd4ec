//! Deterministic output text: one filler word per generated token.

const WORDS: [&str; 16] = [
    " lorem",
    " ipsum",
    " dolor",
    " sit",
    " amet",
    " consectetur",
    " adipiscing",
    " elit",
    " sed",
    " do",
    " eiusmod",
    " tempor",
    " incididunt",
    " ut",
    " labore",
    " magna",
];

/// Text of the token at `index` of any completion.
pub fn token_text(index: u32) -> &'static str {
    WORDS[index as usize % WORDS.len()]
}

/// Text of a whole completion of `tokens` tokens.
pub fn completion_text(tokens: u32) -> String {
    (0..tokens).map(token_text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_the_concatenation_of_tokens() {
        assert_eq!(completion_text(3), " lorem ipsum dolor");
        assert_eq!(token_text(16), token_text(0));
    }
}
