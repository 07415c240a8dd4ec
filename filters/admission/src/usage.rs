//! Reads the pool's `usage` out of a response as it streams past, without
//! holding the response back and with bounded memory whatever its size.
//!
//! Usage is found structurally, never by searching text: a streaming JSON
//! scanner follows the document's nesting and captures only the value at a
//! known path, the top-level `usage` (chat, completions, embeddings, the
//! Responses API's JSON and every stream chunk) or `response.usage` (the
//! Responses API's `response.completed` event). A string anywhere else can
//! hold `"usage":{...}` (a prompt token that decodes to `usage` in vLLM's
//! `prompt_logprobs`, serialised after the real usage) and is never read as
//! one. Memory: the scanner keeps a few bytes of state and the captured
//! value, capped at [`USAGE_CAP`]; SSE is scanned line by line with a fresh
//! scanner per `data:` line, so no line is buffered either.
//!
//! With vLLM's `stream_options.continuous_usage_stats` (llm-policy forces
//! it) every chunk carries the running usage, so the last one seen settles
//! a stream the client hung up on.

use serde::Deserialize;

/// Token counts as the pool reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_tokens: u32,
    /// The usage carried a cached-token count (`prompt_tokens_details` or
    /// `input_tokens_details` with `cached_tokens`). vLLM sends one only
    /// with `--enable-prompt-tokens-details`; ratelimit-service warns about
    /// pools whose reports never do (their cached tokens are billed in full).
    pub cached_reported: bool,
}

/// vLLM's usage object in both of its shapes: chat / completions /
/// embeddings (`prompt_tokens`) and the Responses API (`input_tokens`).
/// The prompt count is required: an object without one is no usage, and
/// the request is charged its reservation rather than settled at zero.
#[derive(Deserialize)]
struct RawUsage {
    #[serde(alias = "input_tokens")]
    prompt_tokens: u32,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: u32,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<RawDetails>,
}

#[derive(Deserialize)]
struct RawDetails {
    #[serde(default)]
    cached_tokens: Option<u32>,
}

impl From<RawUsage> for Usage {
    fn from(raw: RawUsage) -> Self {
        let cached = raw.prompt_tokens_details.and_then(|d| d.cached_tokens);
        Usage {
            prompt_tokens: raw.prompt_tokens,
            completion_tokens: raw.completion_tokens,
            cached_tokens: cached.unwrap_or(0).min(raw.prompt_tokens),
            cached_reported: cached.is_some(),
        }
    }
}

/// Largest usage value captured; real ones are under 300 bytes.
pub const USAGE_CAP: usize = 4 << 10;

/// The member key at one of the two depths the scanner follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Key {
    #[default]
    Other,
    Usage,
    Response,
}

/// The longest key worth remembering (`response`).
const KEY_CAP: usize = 8;

/// Whether `b` is part of a document's structure outside its strings.
fn is_structural(b: u8) -> bool {
    matches!(b, b'{' | b'}' | b'[' | b']' | b'"' | b',' | b':')
}

/// A streaming JSON scanner that captures the value at `usage` or
/// `response.usage`. It does not validate the document: it only needs to
/// know, byte by byte, whether it is inside a string and how deep it is,
/// which any document a JSON encoder wrote tells it exactly.
#[derive(Debug, Default)]
struct Scanner {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Containers at depths 1 and 2: whether each is an object.
    is_object: [bool; 3],
    /// The last member key read at depths 1 and 2.
    keys: [Key; 3],
    expecting_key: bool,
    reading_key: bool,
    key: [u8; KEY_CAP],
    key_len: usize,
    key_overflow: bool,
    /// The value being captured and the depth of the object holding it.
    capture: Option<(u32, Vec<u8>)>,
    capture_overflow: bool,
    found: Option<Usage>,
}

impl Scanner {
    /// Scans `bytes`, the next piece of the document. The work is per run
    /// rather than per byte: outside strings only the structural bytes are
    /// looked at, a string is passed over to the byte that ends or escapes
    /// it, and the captured value is copied in one piece. (Stepped through
    /// byte by byte, this was four fifths of the module's work on a small
    /// response inside Envoy's VM.)
    fn feed(&mut self, bytes: &[u8]) {
        // Where the captured value starts in `bytes`: appended in one piece
        // when it ends, or when `bytes` does.
        let mut captured_from = self.capture.is_some().then_some(0);
        let mut at = 0;
        while at < bytes.len() {
            if self.in_string {
                at = self.string_run(bytes, at);
                continue;
            }
            // Past what no structure is made of (numbers, literals, blanks).
            at += bytes
                .get(at..)
                .unwrap_or_default()
                .iter()
                .position(|&b| is_structural(b))
                .unwrap_or(bytes.len() - at);
            let Some(&b) = bytes.get(at) else { break };
            if let (Some(from), Some((depth, _))) = (captured_from, &self.capture)
                && self.depth == *depth
                && (b == b',' || b == b'}')
            {
                self.append_capture(bytes.get(from..at).unwrap_or_default());
                captured_from = None;
                self.end_capture();
            }
            at += 1;
            self.structural(b);
            if self.capture.is_some() && captured_from.is_none() {
                captured_from = Some(at);
            }
        }
        if let Some(from) = captured_from {
            self.append_capture(bytes.get(from..).unwrap_or_default());
        }
    }

    /// A structural byte outside strings.
    fn structural(&mut self, b: u8) {
        match b {
            b'"' => {
                self.in_string = true;
                if self.expecting_key && self.depth <= 2 {
                    self.reading_key = true;
                    self.key_len = 0;
                    self.key_overflow = false;
                }
            }
            b'{' | b'[' => {
                self.depth = self.depth.saturating_add(1);
                if let Some(slot) = self.slot() {
                    if let Some(kind) = self.is_object.get_mut(slot) {
                        *kind = b == b'{';
                    }
                    if let Some(key) = self.keys.get_mut(slot) {
                        *key = Key::Other;
                    }
                }
                self.expecting_key = b == b'{';
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                self.expecting_key = false;
            }
            b',' => self.expecting_key = self.in_object(),
            b':' if self.capture.is_none() && self.in_object() && self.at_usage_path() => {
                self.capture = Some((self.depth, Vec::new()));
                self.capture_overflow = false;
            }
            _ => {}
        }
    }

    /// Inside a string from `bytes[at]`: only the byte that ends it or
    /// escapes the next changes anything, so the bytes before it are
    /// passed over at once (a key being read is copied). Returns where
    /// scanning goes on.
    fn string_run(&mut self, bytes: &[u8], at: usize) -> usize {
        if self.escaped {
            self.escaped = false;
            // A key with an escape is never one the scanner follows.
            self.key_overflow |= self.reading_key;
            return at + 1;
        }
        let run = bytes.get(at..).unwrap_or_default();
        let stop = run
            .iter()
            .position(|&c| c == b'"' || c == b'\\')
            .unwrap_or(run.len());
        if self.reading_key {
            self.read_key_bytes(run.get(..stop).unwrap_or_default());
        }
        match run.get(stop) {
            Some(b'\\') => self.escaped = true,
            Some(_) => {
                self.in_string = false;
                if self.reading_key {
                    self.reading_key = false;
                    self.expecting_key = false;
                    let key = self.read_key();
                    if let Some(slot) = self.slot()
                        && let Some(k) = self.keys.get_mut(slot)
                    {
                        *k = key;
                    }
                }
            }
            None => {}
        }
        at + stop + 1
    }

    fn read_key_bytes(&mut self, piece: &[u8]) {
        let end = self.key_len + piece.len();
        match self.key.get_mut(self.key_len..end) {
            Some(slot) if !self.key_overflow => {
                slot.copy_from_slice(piece);
                self.key_len = end;
            }
            _ => self.key_overflow = true,
        }
    }

    /// More of the captured value, up to [`USAGE_CAP`] in all.
    fn append_capture(&mut self, piece: &[u8]) {
        if let Some((_, value)) = self.capture.as_mut() {
            if value.len() + piece.len() <= USAGE_CAP {
                value.extend_from_slice(piece);
            } else {
                self.capture_overflow = true;
            }
        }
    }

    /// Index of the current depth in the per-depth arrays, if followed.
    fn slot(&self) -> Option<usize> {
        usize::try_from(self.depth)
            .ok()
            .filter(|&d| (1..=2).contains(&d))
    }

    fn in_object(&self) -> bool {
        self.slot()
            .and_then(|s| self.is_object.get(s).copied())
            .unwrap_or(false)
    }

    fn read_key(&self) -> Key {
        if self.key_overflow {
            return Key::Other;
        }
        match self.key.get(..self.key_len) {
            Some(b"usage") => Key::Usage,
            Some(b"response") => Key::Response,
            _ => Key::Other,
        }
    }

    fn at_usage_path(&self) -> bool {
        match self.depth {
            1 => self.keys.get(1) == Some(&Key::Usage),
            2 => {
                self.keys.get(1) == Some(&Key::Response)
                    && self.is_object.get(1) == Some(&true)
                    && self.keys.get(2) == Some(&Key::Usage)
            }
            _ => false,
        }
    }

    fn end_capture(&mut self) {
        let Some((_, value)) = self.capture.take() else {
            return;
        };
        if self.capture_overflow {
            return;
        }
        // `null` (a chunk before the last without continuous stats) is no
        // usage and leaves an earlier one standing.
        if let Ok(Some(raw)) = serde_json::from_slice::<Option<RawUsage>>(&value) {
            self.found = Some(raw.into());
        }
    }
}

/// Follows one response body.
#[derive(Debug)]
pub struct UsageTracker {
    sse: bool,
    scanner: Scanner,
    /// SSE: the start of the current line, until it shows whether it is a
    /// `data:` line (at most 5 bytes).
    line_head: Vec<u8>,
    in_data_line: bool,
    skipping_line: bool,
    last: Option<Usage>,
}

const DATA_PREFIX: &[u8] = b"data:";

impl UsageTracker {
    /// `sse`: the response is `text/event-stream`.
    pub fn new(sse: bool) -> Self {
        Self {
            sse,
            scanner: Scanner::default(),
            line_head: Vec::with_capacity(DATA_PREFIX.len()),
            in_data_line: false,
            skipping_line: false,
            last: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.sse {
            self.scanner.feed(chunk);
            return;
        }
        let mut rest = chunk;
        while let Some((&b, tail)) = rest.split_first() {
            if self.in_data_line || self.skipping_line {
                // The rest of the line at once: into the scanner when it
                // is a `data:` line, passed over when not.
                let end = rest
                    .iter()
                    .position(|&c| c == b'\n' || c == b'\r')
                    .unwrap_or(rest.len());
                if self.in_data_line {
                    self.scanner.feed(rest.get(..end).unwrap_or_default());
                }
                if end < rest.len() {
                    self.end_line();
                }
                rest = rest.get(end + 1..).unwrap_or_default();
                continue;
            }
            rest = tail;
            if b == b'\n' || b == b'\r' {
                self.end_line();
                continue;
            }
            self.line_head.push(b);
            if self.line_head.as_slice() == DATA_PREFIX {
                self.in_data_line = true;
                self.scanner = Scanner::default();
            } else if !DATA_PREFIX.starts_with(&self.line_head) {
                self.skipping_line = true;
            }
        }
    }

    fn end_line(&mut self) {
        if self.in_data_line {
            // The line's document ends here: a value still open is
            // finished as if its object closed.
            self.scanner.end_capture();
            if let Some(usage) = self.scanner.found.take() {
                self.last = Some(usage);
            }
        }
        self.line_head.clear();
        self.in_data_line = false;
        self.skipping_line = false;
    }

    /// The last usage seen, once the body has ended or been cut off.
    pub fn finish(&mut self) -> Option<Usage> {
        if self.sse {
            self.end_line();
            self.last
        } else {
            self.scanner.found
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USAGE: &str = r#""usage":{"prompt_tokens":42,"completion_tokens":7,"total_tokens":49,"prompt_tokens_details":{"cached_tokens":32}}"#;

    fn expected() -> Option<Usage> {
        Some(Usage {
            prompt_tokens: 42,
            completion_tokens: 7,
            cached_tokens: 32,
            cached_reported: true,
        })
    }

    fn json(body: &str) -> Option<Usage> {
        let mut t = UsageTracker::new(false);
        t.feed(body.as_bytes());
        t.finish()
    }

    #[test]
    fn json_body_in_pieces() {
        let body = format!(r#"{{"id":"x","choices":[{{"text":"hi"}}],{USAGE}}}"#);
        for size in 1..8 {
            let mut t = UsageTracker::new(false);
            for piece in body.as_bytes().chunks(size) {
                t.feed(piece);
            }
            assert_eq!(t.finish(), expected(), "pieces of {size}");
        }
    }

    #[test]
    fn huge_json_keeps_usage_with_bounded_memory() {
        let filler = "a".repeat(3 << 20);
        let body = format!(r#"{{"choices":[{{"text":"{filler}"}}],{USAGE}}}"#);
        let mut t = UsageTracker::new(false);
        for piece in body.as_bytes().chunks(64 << 10) {
            t.feed(piece);
        }
        assert!(t.scanner.capture.is_none());
        assert_eq!(t.finish(), expected());
    }

    #[test]
    fn usage_inside_prompt_logprobs_is_not_usage() {
        // Finding 3: vLLM serialises prompt_logprobs after usage, and a prompt
        // token may decode to `usage`: only the top-level member counts.
        let body = format!(
            r#"{{"choices":[],{USAGE},"prompt_logprobs":[null,{{"11":{{"logprob":-1.0,"rank":1,"decoded_token":"usage"}}}},{{"usage":{{"prompt_tokens":0}}}}]}}"#
        );
        assert_eq!(json(&body), expected());
        // A string holding a fake usage object, after the real one.
        let body =
            format!(r#"{{{USAGE},"choices":[{{"text":"\"usage\":{{\"prompt_tokens\":0}}"}}]}}"#);
        assert_eq!(json(&body), expected());
        // And a key that only starts like usage.
        assert_eq!(json(r#"{"usages":{"prompt_tokens":1}}"#), None);
    }

    #[test]
    fn responses_api_json_and_event() {
        let body = r#"{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":42,"input_tokens_details":{"cached_tokens":32},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":49}}"#;
        assert_eq!(json(body), expected());
        let stream = "event: response.created\n\
             data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"usage\":null}}\n\n\
             event: response.output_text.delta\n\
             data: {\"type\":\"response.output_text.delta\",\"delta\":\"usage\"}\n\n\
             event: response.completed\n\
             data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"output\":[{\"usage\":{\"input_tokens\":1}}],\"usage\":{\"input_tokens\":42,\"input_tokens_details\":{\"cached_tokens\":32},\"output_tokens\":7,\"total_tokens\":49}}}\n\n";
        for split in 1..stream.len() {
            let mut t = UsageTracker::new(true);
            t.feed(&stream.as_bytes()[..split]);
            t.feed(&stream.as_bytes()[split..]);
            assert_eq!(t.finish(), expected(), "split at {split}");
        }
    }

    #[test]
    fn pretty_printed_json_split_anywhere() {
        // Blanks, numbers and literals between the structure are passed
        // over in runs; a cut inside any of them changes nothing.
        let body = "{\n  \"id\": \"chatcmpl-1\",\n  \"created\": 1767225600,\n  \"choices\": [\n    {\"index\": 0, \"logprobs\": null, \"text\": \"a \\\"usage\\\": {}\"}\n  ],\n  \"usage\" : {\n    \"prompt_tokens\": 42,\n    \"completion_tokens\": 7,\n    \"prompt_tokens_details\": {\"cached_tokens\": 32}\n  },\n  \"kv_transfer_params\": null\n}\n";
        assert_eq!(json(body), expected());
        for split in 1..body.len() {
            let mut t = UsageTracker::new(false);
            t.feed(&body.as_bytes()[..split]);
            t.feed(&body.as_bytes()[split..]);
            assert_eq!(t.finish(), expected(), "split at {split}");
        }
    }

    #[test]
    fn embeddings_usage_without_completion() {
        assert_eq!(
            json(r#"{"data":[],"usage":{"prompt_tokens":9,"total_tokens":9}}"#),
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
            assert_eq!(t.finish(), expected(), "split at {split}");
        }
    }

    #[test]
    fn continuous_usage_settles_a_stream_cut_short() {
        // Every chunk carries the running usage; the stream stops mid-way.
        let mut t = UsageTracker::new(true);
        for n in 1..=5 {
            t.feed(format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"x\"}}}}],\"usage\":{{\"prompt_tokens\":42,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\n",
                42 + n
            ).as_bytes());
        }
        t.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"trunc");
        assert_eq!(
            t.finish(),
            Some(Usage {
                prompt_tokens: 42,
                completion_tokens: 5,
                cached_tokens: 0,
                cached_reported: false,
            })
        );
    }

    #[test]
    fn unreadable_usage_is_none() {
        let mut t = UsageTracker::new(true);
        t.feed(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n");
        assert_eq!(t.finish(), None);
        assert_eq!(json("not json"), None);
        // No prompt count: not a usage object.
        assert_eq!(json(r#"{"usage":{}}"#), None);
        assert_eq!(json(r#"{"usage":{"completion_tokens":3}}"#), None);
        // Negative, fractional or huge numbers.
        assert_eq!(json(r#"{"usage":{"prompt_tokens":-1}}"#), None);
        assert_eq!(json(r#"{"usage":{"prompt_tokens":1.5}}"#), None);
        assert_eq!(json(r#"{"usage":{"prompt_tokens":99999999999}}"#), None);
        // A usage value too large to be real is not parsed.
        let padded = format!(
            r#"{{"usage":{{"prompt_tokens":1,"pad":"{}"}}}}"#,
            "x".repeat(USAGE_CAP)
        );
        assert_eq!(json(&padded), None);
    }

    #[test]
    fn whether_cached_tokens_were_reported() {
        let reported = |body: &str| json(body).map(|u| (u.cached_tokens, u.cached_reported));
        // vLLM without --enable-prompt-tokens-details: no details at all.
        assert_eq!(
            reported(r#"{"usage":{"prompt_tokens":5,"completion_tokens":1}}"#),
            Some((0, false))
        );
        assert_eq!(
            reported(r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":null}}"#),
            Some((0, false))
        );
        assert_eq!(
            reported(r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{}}}"#),
            Some((0, false))
        );
        // A zero is a count too.
        assert_eq!(
            reported(
                r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":0}}}"#
            ),
            Some((0, true))
        );
        // The Responses API's name for it.
        assert_eq!(
            reported(r#"{"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":4}}}"#),
            Some((4, true))
        );
        // A stream: the running usage has no details, the final one has.
        let mut t = UsageTracker::new(true);
        t.feed(b"data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n");
        assert_eq!(t.finish().map(|u| u.cached_reported), Some(false));
        t.feed(b"data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n");
        assert_eq!(t.finish().map(|u| u.cached_reported), Some(true));
    }

    #[test]
    fn cached_never_exceeds_prompt() {
        let u =
            json(r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":50}}}"#);
        assert_eq!(u.map(|u| u.cached_tokens), Some(5));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            let mut t = UsageTracker::new(seed & 1 == 0);
            let mut bytes = Vec::new();
            for _ in 0..(seed % 300) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let alphabet = b"{}[]\",:\\usagerponse data:\n 0123";
                bytes.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            t.feed(&bytes);
            // Fed a byte at a time, nothing can be passed over: the runs
            // skipped inside strings must change nothing the steps see.
            let mut stepped = UsageTracker::new(seed & 1 == 0);
            for b in &bytes {
                stepped.feed(std::slice::from_ref(b));
            }
            assert_eq!(
                t.finish(),
                stepped.finish(),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn text_inside_strings_is_passed_over_not_mistaken() {
        // Generated text full of what the scanner looks for, escaped
        // quotes included, before and after the real usage; and in an
        // event stream, a line end inside a string still ends the line.
        let text = r#"usage: {"usage":{"prompt_tokens":1}} \ response"#;
        let body = format!(r#"{{"choices":[{{"text":"{text}"}}],{USAGE},"note":"{text}"}}"#);
        assert_eq!(json(&body), expected());
        // An escaped quote does not end the string it is in: the member
        // after it is still read as a member.
        assert_eq!(json(&format!(r#"{{"id":"q\"",{USAGE}}}"#)), expected());
        let mut t = UsageTracker::new(true);
        t.feed(format!("data: {{\"choices\":[{{\"text\":\"{text}\n").as_bytes());
        t.feed(format!("data: {{{USAGE}}}\n\ndata: [DONE]\n\n").as_bytes());
        assert_eq!(t.finish(), expected());
    }
}
