//! `x-request-id`: kept when the client's is sane, generated otherwise, so
//! logs, usage records and upstream traces share one id.

/// A client id is kept if it is 1..=128 characters of `[A-Za-z0-9._:-]`:
/// enough for UUIDs and trace ids, nothing that could inject into logs.
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A fresh random (v4) UUID.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        assert!(is_valid_request_id("3f1c2d9e-0b7a-4f7e-9c1d-2a3b4c5d6e7f"));
        assert!(is_valid_request_id("trace:abc.123_x"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("has space"));
        assert!(!is_valid_request_id("line\nbreak"));
        assert!(!is_valid_request_id(&"a".repeat(129)));
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = new_request_id();
        assert!(is_valid_request_id(&a));
        assert_ne!(a, new_request_id());
    }
}
