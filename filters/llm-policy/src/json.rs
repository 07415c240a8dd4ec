//! JSON objects kept as their members in document order with the values
//! unparsed, so the policy reads only what it needs, refuses duplicate keys
//! (serde_json would silently keep the last, vLLM's parser might not agree
//! on which one wins), and can re-emit untouched members byte for byte.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::PolicyError;

/// A JSON object: members in order, values as raw JSON text.
#[derive(Debug, Clone)]
pub struct RawObject<'a> {
    members: Vec<(String, &'a RawValue)>,
    /// First key seen twice, if any.
    duplicate: Option<String>,
}

impl<'a> RawObject<'a> {
    /// Parses a top-level request body.
    pub fn parse_body(text: &'a str) -> Result<Self, PolicyError> {
        let object: RawObject<'a> = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => PolicyError::NotAnObject,
            _ => PolicyError::InvalidJson(e.to_string()),
        })?;
        object.refuse_duplicates(None::<&str>)
    }

    /// Parses a member whose value must be an object (`stream_options`, a message).
    pub fn parse_member(raw: &'a RawValue, param: impl fmt::Display) -> Result<Self, PolicyError> {
        let object: RawObject<'a> =
            serde_json::from_str(raw.get()).map_err(|_| PolicyError::InvalidType {
                param: param.to_string(),
                expected: "an object",
            })?;
        object.refuse_duplicates(Some(param))
    }

    /// `parent`: the member this object is, named in the error (the path
    /// is formatted only for it: this runs on every message).
    fn refuse_duplicates(self, parent: Option<impl fmt::Display>) -> Result<Self, PolicyError> {
        match &self.duplicate {
            Some(key) => Err(PolicyError::DuplicateKey {
                key: match parent {
                    Some(parent) => format!("{parent}.{key}"),
                    None => key.clone(),
                },
            }),
            None => Ok(self),
        }
    }

    pub fn members(&self) -> &[(String, &'a RawValue)] {
        &self.members
    }

    /// The raw value of `key`; JSON `null` counts as absent, as in OpenAI's API.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| v.get() != "null")
    }

    pub fn contains(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k == key)
    }

    /// `key` parsed as `T`, `None` when absent or null.
    pub fn typed<T: Deserialize<'a>>(
        &self,
        key: &str,
        param: impl fmt::Display,
        expected: &'static str,
    ) -> Result<Option<T>, PolicyError> {
        self.get(key)
            .map(|raw| typed(raw, param, expected))
            .transpose()
    }

    /// `key` as a non-negative integer within `min..=max`; `None` when absent.
    pub fn integer(&self, key: &str, min: u64, max: u64) -> Result<Option<u32>, PolicyError> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let number: serde_json::Number = typed(raw, key, "an integer")?;
        let out_of_range = || PolicyError::InvalidValue {
            param: key.to_owned(),
            reason: format!("must be an integer between {min} and {max}"),
        };
        if let Some(v) = number.as_u64() {
            if v < min || v > max {
                return Err(out_of_range());
            }
            return u32::try_from(v).map(Some).map_err(|_| out_of_range());
        }
        if number.as_i64().is_some() {
            return Err(out_of_range());
        }
        Err(PolicyError::InvalidType {
            param: key.to_owned(),
            expected: "an integer",
        })
    }
}

/// `raw` parsed as `T`, or an `invalid_type` error naming `param`.
pub fn typed<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    param: impl fmt::Display,
    expected: &'static str,
) -> Result<T, PolicyError> {
    serde_json::from_str(raw.get()).map_err(|_| PolicyError::InvalidType {
        param: param.to_string(),
        expected,
    })
}

/// Where a member sits in the body (`messages[0].content[1].text`), written
/// out only when an error names it: formatted for every member of every
/// message, the paths were a tenth of the policy's work on a small chat
/// request inside the VM.
#[derive(Debug, Clone, Copy)]
pub enum Path<'p> {
    Member(&'p str),
    Index(&'p Path<'p>, usize),
    Field(&'p Path<'p>, &'static str),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Member(name) => f.write_str(name),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
        }
    }
}

/// Whether `raw` is a JSON object / array / string, without parsing it.
pub fn starts_with(raw: &RawValue, c: char) -> bool {
    raw.get().starts_with(c)
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
    }
}

/// Members of an object checked for a repeated key by looking through them.
const SCANNED_MEMBERS: usize = 16;

struct ObjectVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ObjectVisitor<'a> {
    type Value = RawObject<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut members: Vec<(String, &'de RawValue)> = Vec::new();
        // Past a few members, a BTreeSet of the keys seen (not a HashSet:
        // no random seed needed inside the wasm VM), so a body with many
        // keys is no quadratic scan; before that, the members themselves
        // are looked through, which costs less than a copy of every key.
        let mut seen = BTreeSet::new();
        let mut duplicate = None;
        // Keys are decoded (`"mo\u0064el"` is `model`), so escapes cannot hide a duplicate.
        while let Some(key) = map.next_key::<String>()? {
            let value: &'de RawValue = map.next_value()?;
            let repeated = if members.len() < SCANNED_MEMBERS {
                members.iter().any(|(k, _)| *k == key)
            } else {
                if seen.is_empty() {
                    seen.extend(members.iter().map(|(k, _)| k.clone()));
                }
                !seen.insert(key.clone())
            };
            if repeated && duplicate.is_none() {
                duplicate = Some(key.clone());
            }
            members.push((key, value));
        }
        Ok(RawObject { members, duplicate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_raw_text() {
        let o = RawObject::parse_body(r#"{"b": [1, 2], "a":{"x" : 1}}"#).unwrap();
        let keys: Vec<_> = o.members().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(o.get("a").unwrap().get(), r#"{"x" : 1}"#);
    }

    #[test]
    fn duplicates_are_refused_even_when_escaped() {
        for body in [
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":"a","mo\u0064el":"b"}"#,
        ] {
            assert_eq!(
                RawObject::parse_body(body).unwrap_err(),
                PolicyError::DuplicateKey {
                    key: "model".into()
                }
            );
        }
    }

    #[test]
    fn duplicates_are_found_among_many_keys_and_the_first_is_named() {
        // Repeated keys on both sides of the switch from looking through the
        // members to the set of keys seen: the first repeated is named.
        for (first, at) in [(0, 3), (2, 15), (1, 16), (5, 40)] {
            let mut members: Vec<String> = (0..50).map(|i| format!("\"k{i}\":{i}")).collect();
            members.insert(at, format!("\"k{first}\":0"));
            members.push("\"k7\":1".into());
            let body = format!("{{{}}}", members.join(","));
            assert_eq!(
                RawObject::parse_body(&body).unwrap_err(),
                PolicyError::DuplicateKey {
                    key: format!("k{first}")
                },
                "k{first} repeated at {at}"
            );
        }
        let unique: Vec<String> = (0..50).map(|i| format!("\"k{i}\":{i}")).collect();
        assert!(RawObject::parse_body(&format!("{{{}}}", unique.join(","))).is_ok());
    }

    #[test]
    fn nested_duplicates_name_the_path() {
        let o = RawObject::parse_body(
            r#"{"stream_options":{"include_usage":false,"include_usage":true}}"#,
        )
        .unwrap();
        let err = RawObject::parse_member(o.get("stream_options").unwrap(), "stream_options")
            .unwrap_err();
        assert_eq!(
            err,
            PolicyError::DuplicateKey {
                key: "stream_options.include_usage".into()
            }
        );
    }

    #[test]
    fn not_an_object_and_invalid_json() {
        assert_eq!(
            RawObject::parse_body("[1]").unwrap_err(),
            PolicyError::NotAnObject
        );
        assert_eq!(
            RawObject::parse_body("\"x\"").unwrap_err(),
            PolicyError::NotAnObject
        );
        for bad in ["{", "{\"a\":}", "{} {}", "", "{\"a\":1,}"] {
            assert!(
                matches!(RawObject::parse_body(bad), Err(PolicyError::InvalidJson(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn null_is_absent() {
        let o = RawObject::parse_body(r#"{"max_tokens":null}"#).unwrap();
        assert!(o.get("max_tokens").is_none());
        assert!(o.contains("max_tokens"));
        assert_eq!(o.integer("max_tokens", 1, 10), Ok(None));
    }

    #[test]
    fn integers() {
        let o = RawObject::parse_body(r#"{"a":5,"b":-1,"c":1.5,"d":"7","e":100.0,"f":2000000}"#)
            .unwrap();
        assert_eq!(o.integer("a", 1, 10), Ok(Some(5)));
        for key in ["b", "f"] {
            assert!(
                matches!(
                    o.integer(key, 1, 1_000_000),
                    Err(PolicyError::InvalidValue { .. })
                ),
                "{key}"
            );
        }
        for key in ["c", "d", "e"] {
            assert!(
                matches!(o.integer(key, 1, 10), Err(PolicyError::InvalidType { .. })),
                "{key}"
            );
        }
    }

    /// Values the policy does not read are skipped without recursion, so a
    /// deeply nested body cannot overflow the wasm stack.
    #[test]
    fn deep_nesting_does_not_recurse() {
        let deep = format!(
            r#"{{"model":"m","x":{}{}}}"#,
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        assert_eq!(RawObject::parse_body(&deep).unwrap().members().len(), 2);
        let deep_number = format!(r#"{{"n":{}{}}}"#, "[".repeat(200_000), "]".repeat(200_000));
        let o = RawObject::parse_body(&deep_number).unwrap();
        assert!(matches!(
            o.integer("n", 1, 10),
            Err(PolicyError::InvalidType { .. })
        ));
    }
}
