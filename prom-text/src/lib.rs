//! The Prometheus text exposition format, read without trusting it: what
//! ratelimit-service scrapes from vLLM replicas, and what the tests read back
//! from every component's `/metrics`.
//!
//! A line that does not parse is skipped, never an error: a replica that
//! exports one odd metric must not hide the ones the gateway needs. Label
//! values may hold `}`, `,`, `=` and escaped quotes, so quoting is tracked.

/// One sample line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// The label set as written, without its braces (`""` when none).
    pub labels: &'a str,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `key`, unescaped.
    pub fn label(&self, key: &str) -> Option<String> {
        labels(self.labels).find_map(|(k, v)| (k == key).then_some(v))
    }

    /// Whether every `(key, value)` pair is among the sample's labels.
    pub fn has_labels(&self, wanted: &[(&str, &str)]) -> bool {
        wanted
            .iter()
            .all(|(k, v)| self.label(k).is_some_and(|have| have == *v))
    }
}

/// The samples of an exposition, skipping comments and unreadable lines.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(parse_sample)
}

/// The value of the first sample named `name` whose labels include every
/// `labels` pair.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .find(|s| s.name == name && s.has_labels(labels))
        .map(|s| s.value)
}

/// One line as a sample, or `None` for a comment, a blank or a bad line.
pub fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_ascii_whitespace())?;
    let (name, rest) = line.split_at(name_end);
    if !is_metric_name(name) {
        return None;
    }
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => {
            let end = labels_end(inner)?;
            (inner.get(..end)?, inner.get(end + 1..)?)
        }
        None => ("", rest),
    };
    // What follows the value is an optional timestamp, ignored.
    let value = parse_value(rest.split_ascii_whitespace().next()?)?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Where the label set that `text` holds (after its `{`) ends: the index of
/// its closing `}`.
fn labels_end(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
        } else if c == '"' {
            quoted = true;
        } else if c == '}' {
            return Some(i);
        }
    }
    None
}

/// The `key="value"` pairs of a label set, values unescaped; stops at the
/// first malformed pair.
fn labels(text: &str) -> impl Iterator<Item = (&str, String)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let trimmed = rest.trim_start_matches([',', ' ']);
        let (key, after) = trimmed.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        rest = after.get(end + 2..)?;
        Some((key.trim(), value))
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP vllm:num_requests_waiting Waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 2
vllm:kv_cache_usage_perc{engine="0"} 0.25 1712345678000
up 1
weird{a="x\"}, b=\"y",b="2"} 7
broken{a="x"
nan_metric NaN
"#;

    #[test]
    fn samples_values_and_labels() {
        let all: Vec<_> = samples(EXPOSITION).collect();
        assert_eq!(all.len(), 6, "{all:?}");
        assert_eq!(all[0].name, "vllm:num_requests_waiting");
        assert_eq!(all[0].label("engine").as_deref(), Some("0"));
        assert_eq!(all[1].value, 2.0);
        assert_eq!(all[2].value, 0.25, "a timestamp is ignored");
        assert_eq!((all[3].name, all[3].labels, all[3].value), ("up", "", 1.0));
        assert!(all[5].value.is_nan());
    }

    #[test]
    fn quoted_label_values_hide_nothing() {
        let s = parse_sample(r#"m{a="}\"}"} 2"#).unwrap();
        assert_eq!((s.name, s.value), ("m", 2.0));
        assert_eq!(s.label("a").as_deref(), Some(r#"}"}"#));
        assert_eq!(parse_sample("m{a=\"unterminated} 2"), None);
        let w = samples(EXPOSITION).find(|s| s.name == "weird").unwrap();
        assert_eq!(w.label("a").as_deref(), Some(r#"x"}, b="y"#));
        assert_eq!(w.label("b").as_deref(), Some("2"));
    }

    #[test]
    fn value_matches_name_and_every_label() {
        let v = |name, labels: &[(&str, &str)]| value(EXPOSITION, name, labels);
        assert_eq!(
            v("vllm:num_requests_waiting", &[("engine", "1")]),
            Some(2.0)
        );
        assert_eq!(v("vllm:num_requests_waiting", &[]), Some(3.0));
        assert_eq!(v("vllm:num_requests_waiting", &[("engine", "9")]), None);
        assert_eq!(v("vllm:num_requests", &[]), None, "names match exactly");
        assert_eq!(v("weird", &[("b", "2")]), Some(7.0));
    }
}
