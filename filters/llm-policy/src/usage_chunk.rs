//! Removes the usage reports the gateway asked for from a stream whose
//! client did not.
//!
//! Streams are forced to report usage (`stream_options.include_usage`, and
//! vLLM's `continuous_usage_stats`) so admission can settle them, even on a
//! hang-up. vLLM then puts the running `usage` on every chunk, the role
//! chunk included, and ends the stream with a chunk whose `choices` is
//! empty. What the client did not ask for goes on the way back: OpenAI
//! clients that did not ask for the final chunk index `chunk.choices[0]`
//! and crash, and clients that asked only for it (OpenAI: `usage` is null
//! on every other chunk) would count running totals as usage of their own.
//! The conformance suite caught the running member reaching clients.
//!
//! Memory is bounded: at most one incomplete event is held, up to
//! [`EVENT_CAP`] bytes; a longer event is not a usage chunk and goes through
//! as it is.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::json::RawObject;
use crate::rewrite::{Edit, apply};

/// The longest event held back while waiting for its end.
pub const EVENT_CAP: usize = 64 << 10;

const EVENT_END: &[u8] = b"\n\n";

/// What the gateway added to a stream without the client asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForcedUsage {
    /// The final usage chunk (`choices: []`).
    pub final_chunk: bool,
    /// The running `usage` member of every other chunk.
    pub running: bool,
}

impl ForcedUsage {
    /// Whether the response needs filtering at all.
    pub fn any(self) -> bool {
        self.final_chunk || self.running
    }
}

/// Filters one SSE response body.
#[derive(Debug, Default)]
pub struct UsageChunkFilter {
    forced: ForcedUsage,
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
    pub fn new(forced: ForcedUsage) -> Self {
        Self {
            forced,
            ..Self::default()
        }
    }

    /// What the client gets of one complete event.
    fn pass(&self, event: &[u8], out: &mut Vec<u8>) {
        if is_usage_chunk(event) {
            if !self.forced.final_chunk {
                out.extend_from_slice(event);
            }
        } else if self.forced.running {
            match without_running_usage(event) {
                Some(edited) => out.extend_from_slice(&edited),
                None => out.extend_from_slice(event),
            }
        } else {
            out.extend_from_slice(event);
        }
    }

    /// What to send on for `chunk`: every complete event, without what the
    /// gateway forced.
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
            if let Some(event) = self.pending.get(start..end) {
                self.pass(event, &mut out);
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
        let mut out = Vec::with_capacity(rest.len());
        self.pass(&rest, &mut out);
        out
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

/// A one-line `data:` event without its top-level `usage` member, or `None`
/// to send it as it is (no such member, or not a JSON object).
fn without_running_usage(event: &[u8]) -> Option<Vec<u8>> {
    find(event, b"\"usage\"")?;
    let text = std::str::from_utf8(event).ok()?;
    let body = text.trim_end_matches('\n');
    let json = body.strip_prefix("data:")?;
    if json.contains('\n') {
        return None;
    }
    let object = RawObject::parse_body(json.trim()).ok()?;
    let edited = apply(&object, &[Edit::Remove { key: "usage" }])?;
    let mut out = Vec::with_capacity(edited.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(edited.as_bytes());
    out.extend_from_slice(event.get(body.len()..).unwrap_or_default());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
    const USAGE: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";
    /// The client asked for the final chunk but not the running usage.
    const RUNNING_ONLY: ForcedUsage = ForcedUsage {
        final_chunk: false,
        running: true,
    };
    /// The client asked for neither: the chunk of `CONTENT` without usage.
    const BARE: &str =
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const FINAL_ONLY: ForcedUsage = ForcedUsage {
        final_chunk: true,
        running: false,
    };

    #[test]
    fn drops_only_the_usage_chunk_wherever_the_stream_is_cut() {
        let stream = format!("{CONTENT}{CONTENT}{USAGE}{DONE}");
        let want = format!("{CONTENT}{CONTENT}{DONE}");
        for split in 0..=stream.len() {
            let mut f = UsageChunkFilter::new(FINAL_ONLY);
            let mut out = f.feed(&stream.as_bytes()[..split]);
            out.extend(f.feed(&stream.as_bytes()[split..]));
            out.extend(f.finish());
            assert_eq!(String::from_utf8(out).unwrap(), want, "split at {split}");
        }
    }

    #[test]
    fn content_that_mentions_empty_choices_is_kept() {
        let tricky = "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"choices\\\":[],\\\"usage\\\":{}\"}}]}\n\n";
        let mut f = UsageChunkFilter::new(FINAL_ONLY);
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
        let mut f = UsageChunkFilter::new(FINAL_ONLY);
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
        let mut f = UsageChunkFilter::new(FINAL_ONLY);
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
        let mut f = UsageChunkFilter::new(FINAL_ONLY);
        let mut out = f.feed(format!("{CONTENT}{}", USAGE.trim_end()).as_bytes());
        out.extend(f.finish());
        assert_eq!(out, CONTENT.as_bytes());
    }

    #[test]
    fn running_usage_is_removed_wherever_the_stream_is_cut() {
        let both = ForcedUsage {
            final_chunk: true,
            running: true,
        };
        for (forced, want) in [
            (both, format!("{BARE}{BARE}{DONE}")),
            (RUNNING_ONLY, format!("{BARE}{BARE}{USAGE}{DONE}")),
        ] {
            let stream = format!("{CONTENT}{CONTENT}{USAGE}{DONE}");
            for split in 0..=stream.len() {
                let mut f = UsageChunkFilter::new(forced);
                let mut out = f.feed(&stream.as_bytes()[..split]);
                out.extend(f.feed(&stream.as_bytes()[split..]));
                out.extend(f.finish());
                assert_eq!(String::from_utf8(out).unwrap(), want, "split at {split}");
            }
        }
    }

    #[test]
    fn usage_inside_content_or_odd_events_is_left_alone() {
        let in_content = "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":1\"}}]}\n\n";
        let not_json = "data: {\"usage\": oops\n\n";
        let two_lines = "data: {\"usage\":{},\ndata: \"choices\":[1]}\n\n";
        for event in [in_content, not_json, two_lines] {
            let mut f = UsageChunkFilter::new(RUNNING_ONLY);
            let mut out = f.feed(event.as_bytes());
            out.extend(f.finish());
            assert_eq!(String::from_utf8(out).unwrap(), event);
        }
    }
}
