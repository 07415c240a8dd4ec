//! PII redaction of a kept prompt, applied before anything is written.
//!
//! A body that parses as JSON is redacted value by value (string values are
//! scrubbed after JSON unescaping, so `\u0040` cannot hide an `@`); a cut-off
//! or non-JSON body is scrubbed as text. Either way the gateway's own
//! `cache_salt` never reaches the trail: it is the tenant's cache-isolation
//! secret, not something the tenant sent.

use regex::Regex;
use serde_json::Value;
use tenant_registry::{AuditPolicy, PiiKind, Registry, RegistryError};

/// What a redaction found, for metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    /// Matches replaced, per kind label (`email`, …, `custom`).
    pub counts: Vec<(&'static str, u32)>,
}

struct Rule {
    label: &'static str,
    pattern: Regex,
    /// A match is replaced only when this accepts it (the Luhn check).
    accept: fn(&str) -> bool,
}

/// One tenant's redaction rules, compiled.
pub struct Redactor {
    rules: Vec<Rule>,
}

const SALT_FIELD: &str = "cache_salt";

fn always(_: &str) -> bool {
    true
}

/// Luhn checksum over the digits of `s`: tells a card number from any
/// other long run of digits (order ids, timestamps).
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The built-in patterns. Secrets come first (a token can contain what
/// looks like a phone number), cards before phones (a card number contains
/// several phone-shaped runs).
fn builtin(kind: PiiKind) -> Vec<Rule> {
    let rule = |pattern: &str, accept: fn(&str) -> bool| Rule {
        label: kind.as_str(),
        // The patterns are constants, tested below.
        pattern: Regex::new(pattern).unwrap_or_else(|e| panic!("built-in pattern: {e}")),
        accept,
    };
    match kind {
        PiiKind::Secret => vec![
            rule(
                r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
                always,
            ),
            rule(r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{8,}=*", always),
            rule(
                r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}",
                always,
            ),
            rule(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}", always),
            rule(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", always),
            rule(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", always),
            rule(r"\bxox[abprs]-[A-Za-z0-9-]{10,}", always),
        ],
        PiiKind::Email => vec![rule(
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            always,
        )],
        PiiKind::Card => vec![rule(r"\b\d(?:[ -]?\d){12,18}\b", luhn)],
        PiiKind::Phone => vec![rule(
            r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s.-]?\d{3,4}[\s.-]?\d{3,4}\b",
            always,
        )],
    }
}

const ORDER: [PiiKind; 4] = [
    PiiKind::Secret,
    PiiKind::Email,
    PiiKind::Card,
    PiiKind::Phone,
];

/// A custom pattern that does not compile: the field that named it.
pub fn check(registry: &Registry) -> Result<(), RegistryError> {
    for (t, tenant) in registry.tenants().iter().enumerate() {
        for (i, pattern) in tenant.audit().redact_patterns.iter().enumerate() {
            compile_custom(pattern).map_err(|reason| RegistryError::Invalid {
                field: format!("tenants[{t}].audit.redact_patterns[{i}]"),
                reason,
            })?;
        }
    }
    Ok(())
}

/// Bounded, so a tenant's pattern cannot make the writer compile a
/// gigabyte automaton.
fn compile_custom(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())
}

impl Redactor {
    /// The rules `policy` asks for. Custom patterns were checked when the
    /// registry loaded ([`check`]); one that fails here is skipped and
    /// logged rather than stopping the trail.
    pub fn new(policy: &AuditPolicy) -> Self {
        let mut rules = Vec::new();
        for kind in ORDER {
            if policy.redact.contains(&kind) {
                rules.extend(builtin(kind));
            }
        }
        for pattern in &policy.redact_patterns {
            match compile_custom(pattern) {
                Ok(pattern) => rules.push(Rule {
                    label: "custom",
                    pattern,
                    accept: always,
                }),
                Err(e) => tracing::error!(error = %e, "audit redaction pattern skipped"),
            }
        }
        Self { rules }
    }

    /// `body` (possibly cut off at the capture bound) with every match
    /// replaced by `[REDACTED:<kind>]`.
    pub fn redact(&self, body: &[u8], truncated: bool) -> Redacted {
        let mut counts = Vec::new();
        if !truncated && let Ok(mut value) = serde_json::from_slice::<Value>(body) {
            if let Value::Object(map) = &mut value {
                map.remove(SALT_FIELD);
            }
            self.redact_value(&mut value, &mut counts);
            return Redacted {
                text: value.to_string(),
                counts,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = unsalted(&text);
        Redacted {
            text: self.redact_text(&text, &mut counts),
            counts,
        }
    }

    fn redact_value(&self, value: &mut Value, counts: &mut Vec<(&'static str, u32)>) {
        match value {
            Value::String(s) => *s = self.redact_text(s, counts),
            Value::Array(items) => {
                for item in items {
                    self.redact_value(item, counts);
                }
            }
            Value::Object(map) => {
                for item in map.values_mut() {
                    self.redact_value(item, counts);
                }
            }
            _ => {}
        }
    }

    fn redact_text(&self, text: &str, counts: &mut Vec<(&'static str, u32)>) -> String {
        let mut out = text.to_owned();
        for rule in &self.rules {
            let mut found = 0u32;
            let replaced = rule.pattern.replace_all(&out, |c: &regex::Captures<'_>| {
                let m = &c[0];
                if (rule.accept)(m) {
                    found += 1;
                    format!("[REDACTED:{}]", rule.label)
                } else {
                    m.to_owned()
                }
            });
            if found > 0 {
                out = replaced.into_owned();
                match counts.iter_mut().find(|(l, _)| *l == rule.label) {
                    Some((_, n)) => *n += found,
                    None => counts.push((rule.label, found)),
                }
            }
        }
        out
    }
}

/// `text` with the value of a `"cache_salt": "…"` member blanked (the body
/// is cut off, so it cannot be parsed and the member removed).
fn unsalted(text: &str) -> std::borrow::Cow<'_, str> {
    static SALT: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r#""cache_salt"\s*:\s*"[^"]*"?"#).unwrap_or_else(|e| panic!("{e}"))
    });
    SALT.replace_all(text, r#""cache_salt":"[REDACTED:gateway]""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(&AuditPolicy::default())
    }

    fn text(r: &Redactor, s: &str) -> String {
        r.redact(s.as_bytes(), true).text
    }

    #[test]
    fn every_builtin_kind_is_found() {
        let r = all();
        let out = text(
            &r,
            "mail jane.doe+x@mail.example.co.uk, call +1 (415) 555-0134 or 020 7946 0958, \
             card 4111 1111 1111 1111, key sk-proj-abcdefghijklmnop1234, \
             aws AKIAIOSFODNN7EXAMPLE, Authorization: Bearer abc.def-ghi_jkl",
        );
        for leaked in [
            "jane.doe",
            "555-0134",
            "7946",
            "4111 1111",
            "abcdefghijklmnop",
            "AKIAIOSFODNN7",
            "abc.def",
        ] {
            assert!(!out.contains(leaked), "{leaked} leaked: {out}");
        }
        for kind in ["email", "phone", "card", "secret"] {
            assert!(out.contains(&format!("[REDACTED:{kind}]")), "{kind}: {out}");
        }
    }

    #[test]
    fn digits_that_fail_luhn_are_not_cards() {
        let r = Redactor::new(&AuditPolicy {
            redact: vec![PiiKind::Card],
            ..AuditPolicy::default()
        });
        assert_eq!(text(&r, "order 1234567890123456"), "order 1234567890123456");
        assert_eq!(
            text(&r, "pay 5500-0000-0000-0004 now"),
            "pay [REDACTED:card] now"
        );
    }

    #[test]
    fn json_is_redacted_after_unescaping_and_stays_json() {
        let r = all();
        let body = br#"{"model":"m","cache_salt":"s3cr3t","messages":[{"role":"user","content":"me\u0040corp.example"}]}"#;
        let out = r.redact(body, false);
        let value: Value = serde_json::from_str(&out.text).unwrap();
        assert_eq!(value["messages"][0]["content"], "[REDACTED:email]");
        assert!(value.get("cache_salt").is_none());
        assert_eq!(out.counts, vec![("email", 1)]);
    }

    #[test]
    fn a_cut_off_body_loses_its_salt_too() {
        let r = all();
        let out = text(&r, r#"{"cache_salt":"s3cr3t","messages":[{"content":"hi"#);
        assert!(!out.contains("s3cr3t"), "{out}");
    }

    #[test]
    fn custom_patterns_and_only_the_chosen_kinds_apply() {
        let r = Redactor::new(&AuditPolicy {
            redact: vec![PiiKind::Email],
            redact_patterns: vec![r"ACME-\d{6}".into()],
            ..AuditPolicy::default()
        });
        let out = text(&r, "ticket ACME-123456 from a@b.io, tel 415 555 0134");
        assert_eq!(
            out,
            "ticket [REDACTED:custom] from [REDACTED:email], tel 415 555 0134"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let r = Redactor::new(&AuditPolicy {
            redact_patterns: vec![r"\d+".into()],
            ..AuditPolicy::default()
        });
        // A fixed pseudo-random stream: repeatable, and wide enough to hit
        // cut UTF-8, stray quotes and digit runs.
        let alphabet = b"{}\"@.:0123456789 abcxyz-_\xc3\xa9\xff";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    alphabet[(state >> 33) as usize % alphabet.len()]
                })
                .collect();
            for truncated in [false, true] {
                let out = r.redact(&bytes, truncated);
                assert!(out.counts.iter().all(|(_, n)| *n > 0));
            }
        }
    }

    #[test]
    fn a_pattern_that_does_not_compile_names_its_field() {
        let text = r#"
            [tiers.t]
            [[tenants]]
            id = "a"
            tier = "t"
            audit = { redact_patterns = ["ok", "(unclosed"] }
        "#;
        let registry = Registry::from_toml(text).unwrap();
        let e = check(&registry).unwrap_err().to_string();
        assert!(e.contains("tenants[0].audit.redact_patterns[1]"), "{e}");
    }
}
