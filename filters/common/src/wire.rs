//! The proxy-wasm ABI's serialised forms, decoded and encoded without
//! trusting the bytes.
//!
//! The SDK's own decoder indexes and unwraps (a short or odd buffer from the
//! host, or a header name that is not UTF-8, panics the VM). These functions
//! return `None` instead, and keep names and values as bytes: what a client
//! sent is judged by the filter's rules, never by a decoder.

/// Header pairs as the host serialises them: a little-endian `u32` count,
/// then a `u32` length pair per entry, then each name and value followed by
/// a NUL byte. `None` when the buffer is not in that form.
pub fn decode_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = usize::try_from(read_u32(bytes, 0)?).ok()?;
    // Each entry needs at least 8 bytes of sizes and 2 NULs: a count the
    // buffer cannot hold is refused before anything is allocated for it.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    for n in 0..count {
        let sizes = 4 + n * 8;
        let name_len = usize::try_from(read_u32(bytes, sizes)?).ok()?;
        let value_len = usize::try_from(read_u32(bytes, sizes + 4)?).ok()?;
        let name = bytes.get(data..data.checked_add(name_len)?)?.to_vec();
        data = data.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?.to_vec();
        data = data.checked_add(value_len)?.checked_add(1)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// The inverse of [`decode_pairs`], for headers sent with a local reply.
pub fn encode_pairs(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&len_u32(name.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(value.len()).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// A property path (`["connection", "uri_san_peer_certificate"]`): the
/// segments, each followed by a NUL.
pub fn encode_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.iter().map(|s| s.len() + 1).sum());
    for segment in path {
        out.extend_from_slice(segment.as_bytes());
        out.push(0);
    }
    out
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// Lengths the gateway serialises are its own header names and values:
/// far below 4 GiB, but saturate rather than wrap if one ever is not.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_non_utf8_bytes() {
        let pairs: Vec<(&str, &[u8])> = vec![
            (":path", b"/v1/models"),
            ("x-note", b"caf\xe9"),
            ("empty", b""),
        ];
        let decoded = decode_pairs(&encode_pairs(&pairs)).unwrap();
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[1], (b"x-note".to_vec(), b"caf\xe9".to_vec()));
        assert_eq!(decoded[2], (b"empty".to_vec(), Vec::new()));
    }

    #[test]
    fn non_utf8_names_survive() {
        let mut raw = encode_pairs(&[("ab", b"v")]);
        // Overwrite the name's second byte with a lone continuation byte.
        let at = 4 + 8 + 1;
        raw[at] = 0x80;
        let decoded = decode_pairs(&raw).unwrap();
        assert_eq!(decoded[0].0, vec![b'a', 0x80]);
    }

    #[test]
    fn malformed_buffers_are_none_not_panics() {
        let good = encode_pairs(&[("name", b"value"), ("other", b"x")]);
        for cut in 1..good.len() - 1 {
            // Every truncation either decodes to fewer bytes or is refused.
            let _ = decode_pairs(&good[..cut]);
        }
        assert_eq!(decode_pairs(&[1, 2, 3]), None);
        // A count far larger than the buffer.
        assert_eq!(decode_pairs(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]), None);
        // Sizes that overflow.
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(decode_pairs(&huge), None);
    }

    #[test]
    fn path_is_nul_separated() {
        assert_eq!(encode_path(&["connection", "x"]), b"connection\0x\0");
    }
}
