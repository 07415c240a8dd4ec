//! `llm_policy::upstream_error::rewrite`: any status byte and any body the
//! pool may send. No panic; a rewrite is always OpenAI's error shape (a
//! string `code` and `type`), within the bound, and rewriting it again
//! leaves it as it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_policy::upstream_error::{MAX_ERROR_BODY, rewrite};

fuzz_target!(|data: &[u8]| {
    let Some((&select, body)) = data.split_first() else {
        return;
    };
    // 400..=655: every error status and a few past 599.
    let status = 400 + u16::from(select);
    let Some(out) = rewrite(status, body) else {
        return;
    };
    assert!(body.len() <= MAX_ERROR_BODY);
    let value: serde_json::Value = serde_json::from_slice(&out).expect("the rewrite is JSON");
    assert!(value["error"]["code"].is_string(), "{value}");
    assert!(value["error"]["type"].is_string(), "{value}");
    assert_eq!(rewrite(status, &out), None, "already OpenAI's shape");
});
