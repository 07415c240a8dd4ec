//! `admission_filter::UsageTracker::new(true)` (an SSE response body) fed in pieces
//! the fuzzer chooses (layout: `gateway_fuzz::Split`): no panic, and the
//! same usage as the whole body fed at once.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway_fuzz::usage_same_however_cut(true, data));
