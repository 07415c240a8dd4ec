//! `admission_filter::UsageTracker::new(false)` (a JSON response body) fed
//! in pieces the fuzzer chooses (layout: `gateway_fuzz::Split`): no panic,
//! and the same usage as the whole body fed at once.
#![no_main]

use admission_filter::UsageTracker;
use gateway_fuzz::Split;
use libfuzzer_sys::fuzz_target;

/// A repeated body (see `Split`) of 2 KiB and more passes the 4 KiB cap on
/// a captured usage value (`USAGE_CAP` in filters/admission/src/usage.rs).
const REPEAT: usize = 2;

fuzz_target!(|data: &[u8]| {
    let split = Split::new(data, REPEAT);
    let mut whole = UsageTracker::new(false);
    whole.feed(&split.body);
    let mut pieces = UsageTracker::new(false);
    for piece in split.pieces() {
        pieces.feed(piece);
    }
    assert_eq!(
        pieces.finish(),
        whole.finish(),
        "usage differs when the body is cut at {:?}",
        split.cuts
    );
});
