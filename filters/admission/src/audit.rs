//! What the filter gathers for the tenant's audit trail while a request
//! runs: the response body's SHA-256, hashed chunk by chunk as it passes
//! (nothing is held back), and, for a tenant that logs prompts, the start of
//! the request body up to the bound the service named. Host-agnostic.

use admission_proto::v1::AuditFacts;
use sha2::{Digest, Sha256};

/// A digest header as llm-policy set it (64 hex digits), as bytes; anything
/// else is no digest (the header is the gateway's, but a trail entry must
/// never carry something that is not a SHA-256).
pub fn digest_bytes(hex_text: Option<&str>) -> Vec<u8> {
    hex_text
        .filter(|h| h.len() == 64)
        .and_then(|h| hex::decode(h).ok())
        .unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct AuditCapture {
    response: Sha256,
    response_seen: bool,
    prompt: Vec<u8>,
    prompt_limit: usize,
    prompt_truncated: bool,
    http_status: u32,
    upstream_host: String,
}

impl AuditCapture {
    /// `prompt_limit`: bytes of the request body to keep (0: none).
    pub fn new(prompt_limit: u32) -> Self {
        Self {
            response: Sha256::new(),
            response_seen: false,
            prompt: Vec::new(),
            prompt_limit: usize::try_from(prompt_limit).unwrap_or(usize::MAX),
            prompt_truncated: false,
            http_status: 0,
            upstream_host: String::new(),
        }
    }

    /// How many more request-body bytes to read (0: none wanted): the
    /// filter copies no more than this out of the host.
    pub fn prompt_room(&self) -> usize {
        self.prompt_limit.saturating_sub(self.prompt.len())
    }

    /// A chunk of the request body, of which the filter read `chunk`
    /// (at most [`Self::prompt_room`]) out of `size` bytes.
    pub fn request_chunk(&mut self, chunk: &[u8], size: usize) {
        let room = self.prompt_room();
        let take = chunk.len().min(room);
        self.prompt
            .extend_from_slice(chunk.get(..take).unwrap_or_default());
        if size > take && self.prompt_limit > 0 {
            self.prompt_truncated = true;
        }
    }

    pub fn response_head(&mut self, status: u32, upstream_host: String) {
        self.http_status = status;
        // The host's address of the replica: bounded like any text the
        // trail keeps.
        self.upstream_host = upstream_host.chars().take(256).collect();
    }

    pub fn response_chunk(&mut self, chunk: &[u8]) {
        self.response_seen = true;
        self.response.update(chunk);
    }

    pub fn finish(self, credential: String, request_sha256: Vec<u8>) -> AuditFacts {
        AuditFacts {
            credential,
            request_sha256,
            response_sha256: if self.response_seen {
                self.response.finalize().to_vec()
            } else {
                Vec::new()
            },
            http_status: self.http_status,
            upstream_host: self.upstream_host,
            prompt: self.prompt,
            prompt_truncated: self.prompt_truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_digest_does_not_depend_on_chunking() {
        let body = b"data: {\"a\":1}\n\ndata: [DONE]\n\n";
        let mut whole = AuditCapture::new(0);
        whole.response_chunk(body);
        let mut pieces = AuditCapture::new(0);
        for chunk in body.chunks(3) {
            pieces.response_chunk(chunk);
        }
        let (a, b) = (
            whole.finish(String::new(), Vec::new()),
            pieces.finish(String::new(), Vec::new()),
        );
        assert_eq!(a.response_sha256, Sha256::digest(body).to_vec());
        assert_eq!(a.response_sha256, b.response_sha256);
        assert!(
            AuditCapture::new(0)
                .finish(String::new(), Vec::new())
                .response_sha256
                .is_empty()
        );
    }

    #[test]
    fn the_prompt_is_kept_up_to_its_bound_and_marked_when_cut() {
        let mut c = AuditCapture::new(10);
        c.request_chunk(b"0123456", 7);
        assert_eq!(c.prompt_room(), 3);
        c.request_chunk(b"789", 50);
        let facts = c.finish("api_key:k".into(), Vec::new());
        assert_eq!(facts.prompt, b"0123456789");
        assert!(facts.prompt_truncated);
        let mut none = AuditCapture::new(0);
        assert_eq!(none.prompt_room(), 0);
        none.request_chunk(b"", 100);
        let facts = none.finish(String::new(), Vec::new());
        assert!(facts.prompt.is_empty() && !facts.prompt_truncated);
    }

    #[test]
    fn only_a_sha256_passes_as_a_digest() {
        let hex64 = "ab".repeat(32);
        assert_eq!(digest_bytes(Some(&hex64)).len(), 32);
        assert!(digest_bytes(Some("abcd")).is_empty());
        assert!(digest_bytes(Some(&"zz".repeat(32))).is_empty());
        assert!(digest_bytes(None).is_empty());
    }
}
