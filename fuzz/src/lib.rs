//! Helpers shared by the fuzz targets (not a target itself).
//!
//! Streaming parsers must give the same answer however the host cuts a body
//! into chunks. [`Split`] lets the fuzzer choose the cuts from the first
//! bytes of its input, so a single input is a body *and* its chunking:
//!
//! ```text
//! byte 0          control: bits 0-2 = number of cuts (0..=7);
//!                 bits 3-7 all set = repeat the body `repeat` times
//!                 (each target's choice), to reach size caps a 4 KiB
//!                 input cannot: usage_chunk's 64 KiB event cap, the
//!                 usage trackers' 4 KiB value cap. An exact pattern, so
//!                 few mutants keep it: a long body runs much slower.
//! next 2*cuts     each cut's position, u16 little-endian, scaled to the body
//! the rest        the body
//! ```
//!
//! A seed with control byte 0x00 is "the body, fed whole".

/// Control bits that ask for the body repeated.
pub const REPEAT_BITS: u8 = 0xf8;

/// A body and where to cut it.
#[derive(Debug, Clone)]
pub struct Split {
    pub body: Vec<u8>,
    /// Sorted cut positions, each in `0..=body.len()`.
    pub cuts: Vec<usize>,
}

impl Split {
    /// `repeat`: how many times a control byte of 0b11111xxx repeats the body.
    pub fn new(data: &[u8], repeat: usize) -> Self {
        let Some((&control, rest)) = data.split_first() else {
            return Split {
                body: Vec::new(),
                cuts: Vec::new(),
            };
        };
        let wanted = usize::from(control & 0x07);
        let mut raw_cuts = Vec::with_capacity(wanted);
        let mut rest = rest;
        for _ in 0..wanted {
            match rest {
                [lo, hi, tail @ ..] => {
                    raw_cuts.push(u16::from_le_bytes([*lo, *hi]));
                    rest = tail;
                }
                _ => break,
            }
        }
        let body = if control & REPEAT_BITS == REPEAT_BITS {
            rest.repeat(repeat)
        } else {
            rest.to_vec()
        };
        // Scale 0..=65535 onto 0..=len, so a cut can land anywhere in a
        // repeated body too.
        let span = body.len() + 1;
        let mut cuts: Vec<usize> = raw_cuts
            .into_iter()
            .map(|c| (usize::from(c) * span) >> 16)
            .collect();
        cuts.sort_unstable();
        Split { body, cuts }
    }

    /// The body's pieces, in order; empty pieces included (a host can send
    /// an empty chunk).
    pub fn pieces(&self) -> Vec<&[u8]> {
        let mut out = Vec::with_capacity(self.cuts.len() + 1);
        let mut start = 0;
        for &cut in &self.cuts {
            out.push(&self.body[start..cut]);
            start = cut;
        }
        out.push(&self.body[start..]);
        out
    }
}

/// Whether `needle` occurs in `haystack`. Compares only where the first
/// byte matches: a slice comparison per position is a hooked `memcmp` per
/// position under the fuzzer's instrumentation, and slow on 70 KiB bodies.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, _)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .any(|(i, &b)| b == first && haystack[i..].starts_with(needle))
}

/// A repeated body (see [`Split`]) of 2 KiB and more passes the 4 KiB cap on
/// a captured usage value (`USAGE_CAP` in filters/admission/src/usage.rs).
pub const USAGE_REPEAT: usize = 2;

/// The usage targets' property: `UsageTracker::new(sse)` fed the body in the
/// pieces the fuzzer chose finds the same usage as fed it whole (and never
/// panics doing so).
pub fn usage_same_however_cut(sse: bool, data: &[u8]) {
    use admission_filter::UsageTracker;
    let split = Split::new(data, USAGE_REPEAT);
    let mut whole = UsageTracker::new(sse);
    whole.feed(&split.body);
    let mut pieces = UsageTracker::new(sse);
    for piece in split.pieces() {
        pieces.feed(piece);
    }
    assert_eq!(
        pieces.finish(),
        whole.finish(),
        "usage differs when the body is cut at {:?}",
        split.cuts
    );
}
