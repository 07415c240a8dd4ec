//! Prompt tokenization with a real BPE (cl100k_base), so usage numbers look like a real model's.
//!
//! The vocabulary ships inside `tiktoken-rs`; it is loaded once per process and shared by every
//! replica started in it.

use serde::Deserialize;
use std::fmt::Write;
use tiktoken_rs::CoreBPE;

pub type TokenId = u32;

/// cl100k_base's ordinary tokens are the ids `0..ORDINARY_TOKENS`; its special tokens follow.
pub const ORDINARY_TOKENS: TokenId = 100_256;

/// Size of the model's vocabulary as vLLM reports it (highest id + 1, specials included).
pub const VOCAB_SIZE: usize = 100_277;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("loading the cl100k_base vocabulary failed")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Turns prompts into token ids.
#[derive(Clone, Copy)]
pub struct PromptTokenizer {
    bpe: &'static CoreBPE,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PromptTokenizer(cl100k_base)")
    }
}

impl PromptTokenizer {
    pub fn cl100k() -> Result<Self, TokenizerError> {
        static BPE: std::sync::OnceLock<CoreBPE> = std::sync::OnceLock::new();
        if let Some(bpe) = BPE.get() {
            return Ok(Self { bpe });
        }
        let loaded = tiktoken_rs::cl100k_base().map_err(|e| TokenizerError::Load(e.into()))?;
        Ok(Self {
            bpe: BPE.get_or_init(|| loaded),
        })
    }

    /// Plain text only: special-token markers typed by a user are ordinary text, as in a server
    /// that does not let clients inject control tokens.
    pub fn encode(&self, text: &str) -> Vec<TokenId> {
        self.bpe.encode_ordinary(text)
    }

    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Vec<TokenId> {
        self.encode(&render_chat(messages))
    }

    /// The longest token, in characters of the byte-level vocabulary (one per byte), which is
    /// how vLLM bounds a prompt's text before tokenizing it (`max_chars_per_token`).
    pub fn max_chars_per_token(&self) -> usize {
        static LONGEST: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *LONGEST.get_or_init(|| {
            (0..VOCAB_SIZE as TokenId)
                .filter_map(|token| self.bpe.decode_bytes(&[token]).ok())
                .map(|bytes| bytes.len())
                .max()
                .unwrap_or(1)
        })
    }

    /// Text of one token, as vLLM's `decoded_token`. A token holding part of a multi-byte
    /// character decodes to replacement characters; an id outside the vocabulary gives `None`.
    pub fn decode_token(&self, token: TokenId) -> Option<String> {
        let bytes = self.bpe.decode_bytes(&[token]).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// One chat message as clients send it.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// Content as a plain string or as OpenAI's array of typed parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// A Llama-3-like template: a header per message, then the assistant header that the model
/// continues from. Non-text parts (images, audio) carry no text and add nothing.
pub fn render_chat(messages: &[ChatMessage]) -> String {
    let mut out = String::from("<|begin_of_text|>");
    for message in messages {
        let _ = write!(
            out,
            "<|start_header_id|>{}<|end_header_id|>\n\n",
            message.role
        );
        match &message.content {
            Some(MessageContent::Text(text)) => out.push_str(text),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter(|part| part.kind == "text")
                .filter_map(|part| part.text.as_deref())
                .for_each(|text| out.push_str(text)),
            None => {}
        }
        out.push_str("<|eot_id|>");
    }
    out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> ChatMessage {
        serde_json::from_str(json).expect("valid message")
    }

    #[test]
    fn counts_like_cl100k() {
        let tokenizer = PromptTokenizer::cl100k().expect("vocabulary loads");
        // "hello world" is two tokens in cl100k_base.
        assert_eq!(tokenizer.encode("hello world"), vec![15339, 1917]);
    }

    #[test]
    fn decodes_single_tokens() {
        let tokenizer = PromptTokenizer::cl100k().expect("vocabulary loads");
        assert_eq!(tokenizer.decode_token(1917).as_deref(), Some(" world"));
        assert_eq!(tokenizer.decode_token(u32::MAX), None);
        assert!(tokenizer.decode_token(ORDINARY_TOKENS - 1).is_some());
        assert_eq!(tokenizer.decode_token(ORDINARY_TOKENS), None);
        let last = TokenId::try_from(VOCAB_SIZE - 1).expect("fits");
        assert_eq!(
            tokenizer.decode_token(last).as_deref(),
            Some("<|endofprompt|>")
        );
    }

    #[test]
    fn string_and_text_parts_render_the_same() {
        let plain = message(r#"{"role":"user","content":"hi there"}"#);
        let parts = message(
            r#"{"role":"user","content":[{"type":"text","text":"hi "},
                {"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"there"}]}"#,
        );
        assert_eq!(render_chat(&[plain]), render_chat(&[parts]));
    }

    #[test]
    fn template_marks_roles_and_ends_with_the_assistant_header() {
        let rendered = render_chat(&[
            message(r#"{"role":"system","content":"be brief"}"#),
            message(r#"{"role":"user","content":"hi"}"#),
        ]);
        assert!(rendered.contains("system<|end_header_id|>\n\nbe brief<|eot_id|>"));
        assert!(rendered.ends_with("assistant<|end_header_id|>\n\n"));
    }
}
