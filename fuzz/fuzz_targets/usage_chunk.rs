//! `llm_policy::usage_chunk::UsageChunkFilter` fed in pieces the fuzzer
//! chooses (layout: `gateway_fuzz::Split`): no panic; it only ever removes
//! bytes; and it passes the stream through unchanged when nothing in it
//! could be forced usage (no `"choices":[]` and no `"usage"` anywhere).
#![no_main]

use gateway_fuzz::{Split, contains};
use libfuzzer_sys::fuzz_target;
use llm_policy::usage_chunk::{EVENT_CAP, ForcedUsage, UsageChunkFilter};

/// A repeated body (see `Split`) of 3 KiB passes the 64 KiB event cap.
const REPEAT: usize = 24;
const _: () = assert!(3072 * REPEAT > EVENT_CAP);

fuzz_target!(|data: &[u8]| {
    let split = Split::new(data, REPEAT);
    let mut filter = UsageChunkFilter::new(ForcedUsage {
        final_chunk: true,
        running: true,
    });
    let mut out = Vec::with_capacity(split.body.len());
    for piece in split.pieces() {
        out.extend(filter.feed(piece));
    }
    out.extend(filter.finish());
    assert!(
        out.len() <= split.body.len(),
        "output ({} bytes) longer than input ({} bytes), cuts {:?}",
        out.len(),
        split.body.len(),
        split.cuts
    );
    if !contains(&split.body, b"\"choices\":[]") && !contains(&split.body, b"\"usage\"") {
        assert!(
            out == split.body,
            "stream without usage changed, cuts {:?}",
            split.cuts
        );
    }
});
