//! `filter_common::wire::decode_pairs` on any buffer the host might hand a
//! filter: it never panics, and what it decodes survives `encode_pairs`.
#![no_main]

use filter_common::wire::{decode_pairs, encode_pairs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(pairs) = decode_pairs(data) else {
        return;
    };
    // `encode_pairs` takes names as &str: round-trip only when every name
    // is UTF-8 (a lossy conversion would change the pairs, not test them).
    let Ok(named) = pairs
        .iter()
        .map(|(name, value)| std::str::from_utf8(name).map(|n| (n, value.as_slice())))
        .collect::<Result<Vec<(&str, &[u8])>, _>>()
    else {
        return;
    };
    let encoded = encode_pairs(&named);
    let again = decode_pairs(&encoded);
    assert_eq!(
        again.as_ref(),
        Some(&pairs),
        "encode_pairs of decoded pairs does not decode to the same pairs"
    );
    // The canonical form is a fixed point.
    assert_eq!(encode_pairs(&named), encoded);
});
