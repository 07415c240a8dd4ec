//! Reads the pool's `usage` out of a response as it streams past, without
//! holding the response back and with bounded memory.
//!
//! JSON responses are kept up to a cap and parsed at the end; past the cap
//! only the tail is kept, where OpenAI-compatible servers put `usage`. SSE
//! streams are scanned line by line and only `data:` events mentioning
//! `usage` are parsed; the last one with a non-null usage wins.

use serde::Deserialize;

/// Token counts as the pool reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: u32,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    prompt_tokens_details: Option<RawDetails>,
}

#[derive(Deserialize)]
struct RawDetails {
    #[serde(default)]
    cached_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct WithUsage {
    usage: Option<RawUsage>,
}

impl From<RawUsage> for Usage {
    fn from(raw: RawUsage) -> Self {
        Usage {
            prompt_tokens: raw.prompt_tokens,
            completion_tokens: raw.completion_tokens,
            cached_tokens: raw
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
        }
    }
}

const JSON_CAP: usize = 1 << 20;
const JSON_TAIL: usize = 64 << 10;
const LINE_CAP: usize = 256 << 10;

/// Follows one response body.
#[derive(Debug)]
pub struct UsageTracker {
    sse: bool,
    buf: Vec<u8>,
    truncated: bool,
    last: Option<Usage>,
}

impl UsageTracker {
    /// `sse`: the response is `text/event-stream`.
    pub fn new(sse: bool) -> Self {
        Self {
            sse,
            buf: Vec::new(),
            truncated: false,
            last: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.sse {
            self.feed_sse(chunk);
        } else {
            self.buf.extend_from_slice(chunk);
            if self.buf.len() > JSON_CAP {
                let cut = self.buf.len() - JSON_TAIL;
                self.buf.drain(..cut);
                self.truncated = true;
            }
        }
    }

    fn feed_sse(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if let Some(last_newline) = self.buf.iter().rposition(|&b| b == b'\n') {
            let complete: Vec<u8> = self.buf.drain(..=last_newline).collect();
            for line in complete.split(|&b| b == b'\n') {
                if let Some(usage) = sse_usage(line) {
                    self.last = Some(usage);
                }
            }
        }
        if self.buf.len() > LINE_CAP {
            // A line this long carries no usage we could afford to parse.
            self.buf.clear();
        }
    }

    /// The usage, once the body has ended.
    pub fn finish(&mut self) -> Option<Usage> {
        if self.sse {
            let rest = std::mem::take(&mut self.buf);
            if let Some(usage) = sse_usage(&rest) {
                self.last = Some(usage);
            }
            return self.last;
        }
        if !self.truncated
            && let Ok(whole) = serde_json::from_slice::<WithUsage>(&self.buf)
        {
            return whole.usage.map(Usage::from);
        }
        usage_after_key(&self.buf)
    }
}

fn sse_usage(line: &[u8]) -> Option<Usage> {
    let data = line.strip_prefix(b"data:")?;
    if !contains(data, b"\"usage\"") {
        return None;
    }
    serde_json::from_slice::<WithUsage>(data.trim_ascii())
        .ok()?
        .usage
        .map(Usage::from)
}

/// Parses the value after the last `"usage":` in `bytes`.
fn usage_after_key(bytes: &[u8]) -> Option<Usage> {
    let key = b"\"usage\"";
    let at = bytes.windows(key.len()).rposition(|w| w == key)?;
    let rest = bytes.get(at + key.len()..)?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let mut values =
        serde_json::Deserializer::from_slice(rest.get(colon + 1..)?).into_iter::<RawUsage>();
    values.next()?.ok().map(Usage::from)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = r#""usage":{"prompt_tokens":42,"completion_tokens":7,"total_tokens":49,"prompt_tokens_details":{"cached_tokens":32}}"#;

    #[test]
    fn json_body_in_pieces() {
        let body = format!(r#"{{"id":"x","choices":[{{"text":"hi"}}],{USAGE}}}"#);
        let mut t = UsageTracker::new(false);
        for piece in body.as_bytes().chunks(5) {
            t.feed(piece);
        }
        assert_eq!(
            t.finish(),
            Some(Usage {
                prompt_tokens: 42,
                completion_tokens: 7,
                cached_tokens: 32
            })
        );
    }

    #[test]
    fn huge_json_keeps_tail_usage() {
        let filler = "a".repeat(3 << 20);
        let body = format!(r#"{{"choices":[{{"text":"{filler}"}}],{USAGE}}}"#);
        let mut t = UsageTracker::new(false);
        for piece in body.as_bytes().chunks(64 << 10) {
            t.feed(piece);
        }
        assert!(t.buf.len() <= JSON_CAP);
        assert_eq!(t.finish().map(|u| u.prompt_tokens), Some(42));
    }

    #[test]
    fn embeddings_usage_without_completion() {
        let mut t = UsageTracker::new(false);
        t.feed(br#"{"data":[],"usage":{"prompt_tokens":9,"total_tokens":9}}"#);
        assert_eq!(
            t.finish(),
            Some(Usage {
                prompt_tokens: 9,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn sse_last_usage_chunk_split_anywhere() {
        let stream = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"a\"}}}}],\"usage\":null}}\n\n\
             data: {{\"choices\":[],{USAGE}}}\n\ndata: [DONE]\n\n"
        );
        for split in 1..stream.len() {
            let mut t = UsageTracker::new(true);
            t.feed(&stream.as_bytes()[..split]);
            t.feed(&stream.as_bytes()[split..]);
            assert_eq!(
                t.finish().map(|u| u.completion_tokens),
                Some(7),
                "split at {split}"
            );
        }
    }

    #[test]
    fn no_usage_is_none() {
        let mut t = UsageTracker::new(true);
        t.feed(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
        assert_eq!(t.finish(), None);
        let mut t = UsageTracker::new(false);
        t.feed(b"not json");
        assert_eq!(t.finish(), None);
    }
}
