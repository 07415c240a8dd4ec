//! Body rewrites: set or remove top-level members and keep everything else
//! exactly as the client sent it (order and raw text of every other member).
//! Nothing changed means no new body, so the original bytes go through.

use serde_json::Value;

use crate::error::PolicyError;
use crate::json::RawObject;

/// One change to an object's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Set `key` to `value` (raw JSON text), in place if present, else appended.
    Set {
        key: &'static str,
        value: String,
    },
    Remove {
        key: &'static str,
    },
}

impl Edit {
    fn key(&self) -> &'static str {
        match self {
            Edit::Set { key, .. } | Edit::Remove { key } => key,
        }
    }
}

/// `object` with `edits` applied, or `None` when they change nothing.
pub fn apply(object: &RawObject<'_>, edits: &[Edit]) -> Option<String> {
    let mut changed = false;
    let mut members: Vec<(&str, &str)> = Vec::with_capacity(object.members().len() + edits.len());
    for (key, raw) in object.members() {
        match edits.iter().find(|e| e.key() == key) {
            None => members.push((key, raw.get())),
            Some(Edit::Remove { .. }) => changed = true,
            Some(Edit::Set { value, .. }) => {
                changed |= raw.get() != value;
                members.push((key, value));
            }
        }
    }
    for edit in edits {
        if let Edit::Set { key, value } = edit
            && !object.contains(key)
        {
            changed = true;
            members.push((key, value));
        }
    }
    if !changed {
        return None;
    }
    let size = members
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum::<usize>()
        + 2;
    let mut out = String::with_capacity(size);
    out.push('{');
    for (i, (key, raw)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Keys were decoded on parse; re-encode them (escapes normalised).
        // A plain key (every one an API defines) is its own encoding.
        if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            out.push('"');
            out.push_str(key);
            out.push('"');
        } else {
            out.push_str(&Value::String(key.to_owned()).to_string());
        }
        out.push(':');
        out.push_str(raw);
    }
    out.push('}');
    Some(out)
}

/// What forcing usage reports on a stream changes, and whether the client
/// had asked for the usage chunk itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReporting {
    pub edit: Option<Edit>,
    /// `stream_options.include_usage` was already `true`: the final usage
    /// chunk is the client's and stays in its stream.
    pub client_asked: bool,
    /// `continuous_usage_stats` was already `true` too: so is the running
    /// usage on every chunk.
    pub client_asked_running: bool,
}

/// The edit that forces `stream_options.include_usage` and vLLM's
/// `continuous_usage_stats`: every chunk then carries the running usage, so
/// admission settles exact tokens even when the client hangs up mid-stream.
pub fn force_usage_reporting(object: &RawObject<'_>) -> Result<UsageReporting, PolicyError> {
    let forced = [
        Edit::Set {
            key: "include_usage",
            value: "true".into(),
        },
        Edit::Set {
            key: "continuous_usage_stats",
            value: "true".into(),
        },
    ];
    let (value, client_asked, client_asked_running) = match object.get("stream_options") {
        None => (
            Some(r#"{"include_usage":true,"continuous_usage_stats":true}"#.to_owned()),
            false,
            false,
        ),
        Some(raw) => {
            let options = RawObject::parse_member(raw, "stream_options")?;
            let is_true = |key| options.get(key).is_some_and(|v| v.get().trim() == "true");
            let asked = is_true("include_usage");
            // vLLM sends running usage only with include_usage.
            let running = asked && is_true("continuous_usage_stats");
            (apply(&options, &forced), asked, running)
        }
    };
    Ok(UsageReporting {
        edit: value.map(|value| Edit::Set {
            key: "stream_options",
            value,
        }),
        client_asked,
        client_asked_running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &str, edits: &[Edit]) -> Option<String> {
        apply(&RawObject::parse_body(body).unwrap(), edits)
    }

    fn set(key: &'static str, value: &str) -> Edit {
        Edit::Set {
            key,
            value: value.into(),
        }
    }

    #[test]
    fn set_in_place_and_append() {
        let body = r#"{"model":"m", "cache_salt":"evil","messages":[ {"role":"user"} ],"x":1.50}"#;
        assert_eq!(
            run(body, &[set("cache_salt", r#""good""#)]).unwrap(),
            r#"{"model":"m","cache_salt":"good","messages":[ {"role":"user"} ],"x":1.50}"#
        );
        assert_eq!(
            run(r#"{"a":1}"#, &[set("cache_salt", r#""s""#)]).unwrap(),
            r#"{"a":1,"cache_salt":"s"}"#
        );
    }

    #[test]
    fn remove() {
        assert_eq!(
            run(
                r#"{"cache_salt":"x","a":"\u00e9"}"#,
                &[Edit::Remove { key: "cache_salt" }]
            )
            .unwrap(),
            r#"{"a":"\u00e9"}"#
        );
        // Removing an absent key changes nothing.
        assert_eq!(
            run(r#"{"a":1}"#, &[Edit::Remove { key: "cache_salt" }]),
            None
        );
    }

    #[test]
    fn unchanged_means_none() {
        assert_eq!(
            run(r#"{"cache_salt":"s"}"#, &[set("cache_salt", r#""s""#)]),
            None
        );
        assert_eq!(run(r#"{"a":1}"#, &[]), None);
    }

    #[test]
    fn escaped_keys_stay_valid_json() {
        let out = run(r#"{"we\"ird":1}"#, &[set("b", "2")]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["we\"ird"], 1);
    }

    /// Every key is written as serde_json writes it, whether it takes the
    /// plain path or the escaper's.
    #[test]
    fn keys_are_encoded_as_json_encodes_them() {
        for key in [
            "model",
            "m\u{e9}ta",
            "a b",
            "q\"uote",
            "back\\slash",
            "tab\t",
            "nul\u{0}",
            "del\u{7f}",
        ] {
            let body = serde_json::json!({ key: 1 }).to_string();
            let out = run(&body, &[set("z", "2")]).unwrap();
            let expected = format!("{{{}:1,\"z\":2}}", serde_json::Value::from(key));
            assert_eq!(out, expected, "{key:?}");
        }
    }

    #[test]
    fn usage_reporting_is_forced() {
        let run = |body: &str| force_usage_reporting(&RawObject::parse_body(body).unwrap());
        let both = r#"{"include_usage":true,"continuous_usage_stats":true}"#;
        let r = run(r#"{}"#).unwrap();
        assert_eq!(r.edit, Some(set("stream_options", both)));
        assert!(!r.client_asked);
        assert_eq!(
            run(r#"{"stream_options":null}"#).unwrap().edit,
            Some(set("stream_options", both))
        );
        let r = run(r#"{"stream_options":{"continuous_usage_stats":false,"include_usage":false}}"#)
            .unwrap();
        assert_eq!(
            r.edit,
            Some(set(
                "stream_options",
                r#"{"continuous_usage_stats":true,"include_usage":true}"#
            ))
        );
        assert!(!r.client_asked);
        let r = run(r#"{"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!(r.edit, Some(set("stream_options", both)));
        assert!(r.client_asked);
        assert!(!r.client_asked_running);
        let r = run(r#"{"stream_options":{"include_usage":true,"continuous_usage_stats":true}}"#)
            .unwrap();
        assert_eq!(r.edit, None);
        assert!(r.client_asked_running);
        assert!(matches!(
            run(r#"{"stream_options":3}"#),
            Err(PolicyError::InvalidType { .. })
        ));
    }
}
