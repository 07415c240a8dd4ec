//! Removes the usage chunk the gateway asked for from a stream whose client
//! did not.
//!
//! Streams are forced to report usage (`stream_options.include_usage`, and
//! vLLM's `continuous_usage_stats`) so admission can settle them; vLLM then
//! ends the stream with a chunk whose `choices` is empty. OpenAI clients
//! that did not ask for it index `chunk.choices[0]` and crash, so that
//! chunk is dropped here on its way back. The running `usage` member on the
//! other chunks stays: OpenAI's chunk schema has it as optional.
//!
//! Memory is bounded: at most one incomplete event is held, up to
//! [`EVENT_CAP`] bytes; a longer event is not a usage chunk and goes through
//! as it is.

use serde::Deserialize;
use serde::de::IgnoredAny;

/// The longest event held back while waiting for its end.
pub const EVENT_CAP: usize = 64 << 10;

const EVENT_END: &[u8] = b"\n\n";

/// Filters one SSE response body.
#[derive(Debug, Default)]
pub struct UsageChunkFilter {
    pending: Vec<u8>,
    /// Bytes of `pending` already searched for an event end: a long event
    /// arriving in small chunks is scanned once, not once per chunk.
    scanned: usize,
}

#[derive(Deserialize)]
struct Chunk {
    choices: Vec<IgnoredAny>,
    usage: Option<IgnoredAny>,
}

impl UsageChunkFilter {
    /// What to send on for `chunk`: every complete event but the usage chunk.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut start = 0;
        // An event end may straddle the previous chunk's last byte.
        let mut from = self.scanned.saturating_sub(EVENT_END.len() - 1);
        while let Some(len) = self
            .pending
            .get(from..)
            .and_then(|rest| find(rest, EVENT_END))
        {
            let end = from + len + EVENT_END.len();
            if let Some(event) = self.pending.get(start..end)
                && !is_usage_chunk(event)
            {
                out.extend_from_slice(event);
            }
            start = end;
            from = end;
        }
        self.pending.drain(..start.min(self.pending.len()));
        if self.pending.len() > EVENT_CAP {
            out.append(&mut self.pending);
        }
        self.scanned = self.pending.len();
        out
    }

    /// What is left when the stream ends (an event without its blank line).
    pub fn finish(&mut self) -> Vec<u8> {
        self.scanned = 0;
        let rest = std::mem::take(&mut self.pending);
        if is_usage_chunk(&rest) {
            Vec::new()
        } else {
            rest
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A `data:` event whose JSON has empty `choices` and a non-null `usage`.
fn is_usage_chunk(event: &[u8]) -> bool {
    // Cheap screen first: only candidates are parsed.
    if find(event, b"\"choices\":[]").is_none() {
        return false;
    }
    event
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data:"))
        .any(|data| {
            serde_json::from_slice::<Chunk>(data.trim_ascii())
                .is_ok_and(|c| c.choices.is_empty() && c.usage.is_some())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
    const USAGE: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    #[test]
    fn drops_only_the_usage_chunk_wherever_the_stream_is_cut() {
        let stream = format!("{CONTENT}{CONTENT}{USAGE}{DONE}");
        let want = format!("{CONTENT}{CONTENT}{DONE}");
        for split in 0..=stream.len() {
            let mut f = UsageChunkFilter::default();
            let mut out = f.feed(&stream.as_bytes()[..split]);
            out.extend(f.feed(&stream.as_bytes()[split..]));
            out.extend(f.finish());
            assert_eq!(String::from_utf8(out).unwrap(), want, "split at {split}");
        }
    }

    #[test]
    fn content_that_mentions_empty_choices_is_kept() {
        let tricky = "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"choices\\\":[],\\\"usage\\\":{}\"}}]}\n\n";
        let mut f = UsageChunkFilter::default();
        let mut out = f.feed(tricky.as_bytes());
        out.extend(f.finish());
        assert_eq!(out, tricky.as_bytes());
    }

    #[test]
    fn a_huge_event_goes_through_and_memory_stays_bounded() {
        let big = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
            "x".repeat(EVENT_CAP * 2)
        );
        let mut f = UsageChunkFilter::default();
        let mut out = Vec::new();
        for piece in big.as_bytes().chunks(4096) {
            out.extend(f.feed(piece));
            assert!(f.pending.len() <= EVENT_CAP + 4096);
        }
        out.extend(f.finish());
        assert_eq!(out, big.as_bytes());
    }

    #[test]
    fn a_stream_fed_a_byte_at_a_time_is_filtered_the_same() {
        let stream = format!("{CONTENT}{USAGE}{CONTENT}{DONE}");
        let mut f = UsageChunkFilter::default();
        let mut out = Vec::new();
        for b in stream.as_bytes() {
            out.extend(f.feed(std::slice::from_ref(b)));
        }
        out.extend(f.finish());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{CONTENT}{CONTENT}{DONE}")
        );
    }

    #[test]
    fn a_final_usage_chunk_without_blank_line_is_dropped() {
        let mut f = UsageChunkFilter::default();
        let mut out = f.feed(format!("{CONTENT}{}", USAGE.trim_end()).as_bytes());
        out.extend(f.finish());
        assert_eq!(out, CONTENT.as_bytes());
    }
}
