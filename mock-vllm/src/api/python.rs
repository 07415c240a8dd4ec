//! The Python behaviour that shows through vLLM's HTTP answers: where CPython's `json` module
//! reports a syntax error, how Python prints strings and floats (`repr`), how prometheus_client
//! writes numbers, and the scrubbing vLLM applies to every error message.

use serde_json::Value;

/// A JSON syntax error as CPython's `json.loads` reports it: the message (without the
/// `: line L column C (char P)` suffix) and the position in characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub msg: &'static str,
    pub pos: usize,
}

/// Where and why `json.loads` (CPython 3.12, strict) refuses `text`, or `None` if it accepts
/// it. Used only once serde has refused the body, to word the error the way vLLM does.
pub fn json_error(text: &str) -> Option<JsonError> {
    let chars: Vec<char> = text.chars().collect();
    let mut scanner = Scanner { s: &chars };
    let start = scanner.skip_ws(0);
    let end = match scanner.value(start) {
        Ok(end) => end,
        Err(Fail::Stop(pos)) => {
            return Some(JsonError {
                msg: "Expecting value",
                pos,
            });
        }
        Err(Fail::Error(error)) => return Some(error),
    };
    let end = scanner.skip_ws(end);
    (end != chars.len()).then_some(JsonError {
        msg: "Extra data",
        pos: end,
    })
}

enum Fail {
    /// No value starts here (Python's `StopIteration`), reported as "Expecting value".
    Stop(usize),
    Error(JsonError),
}

fn fail(msg: &'static str, pos: usize) -> Fail {
    Fail::Error(JsonError { msg, pos })
}

struct Scanner<'a> {
    s: &'a [char],
}

impl Scanner<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.s.get(i).copied()
    }

    fn skip_ws(&self, mut i: usize) -> usize {
        while matches!(self.at(i), Some(' ' | '\t' | '\n' | '\r')) {
            i += 1;
        }
        i
    }

    fn literal(&self, i: usize, word: &str) -> bool {
        word.chars()
            .enumerate()
            .all(|(k, c)| self.at(i + k) == Some(c))
    }

    /// Scans one value starting exactly at `i`; returns the index after it.
    fn value(&mut self, i: usize) -> Result<usize, Fail> {
        match self.at(i) {
            None => Err(Fail::Stop(i)),
            Some('"') => self.string(i + 1),
            Some('{') => self.object(i + 1),
            Some('[') => self.array(i + 1),
            Some('n') if self.literal(i, "null") => Ok(i + 4),
            Some('t') if self.literal(i, "true") => Ok(i + 4),
            Some('f') if self.literal(i, "false") => Ok(i + 5),
            Some('N') if self.literal(i, "NaN") => Ok(i + 3),
            Some('I') if self.literal(i, "Infinity") => Ok(i + 8),
            Some('-') if self.literal(i, "-Infinity") => Ok(i + 9),
            Some(_) => self.number(i),
        }
    }

    fn number(&self, start: usize) -> Result<usize, Fail> {
        let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
        let mut i = start;
        if self.at(i) == Some('-') {
            i += 1;
        }
        match self.at(i) {
            Some('1'..='9') => {
                while digit(self.at(i)) {
                    i += 1;
                }
            }
            Some('0') => i += 1,
            _ => return Err(Fail::Stop(start)),
        }
        if self.at(i) == Some('.') && digit(self.at(i + 1)) {
            i += 1;
            while digit(self.at(i)) {
                i += 1;
            }
        }
        if matches!(self.at(i), Some('e' | 'E')) {
            let mut j = i + 1;
            if matches!(self.at(j), Some('+' | '-')) {
                j += 1;
            }
            if digit(self.at(j)) {
                while digit(self.at(j)) {
                    j += 1;
                }
                i = j;
            }
        }
        Ok(i)
    }

    /// `i` is just after the opening quote.
    fn string(&self, mut i: usize) -> Result<usize, Fail> {
        let begin = i - 1;
        loop {
            match self.at(i) {
                None => return Err(fail("Unterminated string starting at", begin)),
                Some('"') => return Ok(i + 1),
                Some('\\') => {
                    let escape = i;
                    i += 1;
                    match self.at(i) {
                        None => return Err(fail("Unterminated string starting at", begin)),
                        Some('"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't') => i += 1,
                        // CPython wants the four digits and one more character, and points
                        // at the `u`.
                        Some('u') => {
                            let hex = (1..=4)
                                .all(|k| self.at(i + k).is_some_and(|c| c.is_ascii_hexdigit()));
                            if i + 5 >= self.s.len() || !hex {
                                return Err(fail("Invalid \\uXXXX escape", i));
                            }
                            i += 5;
                        }
                        Some(_) => return Err(fail("Invalid \\escape", escape)),
                    }
                }
                Some(c) if (c as u32) < 0x20 => {
                    return Err(fail("Invalid control character at", i));
                }
                Some(_) => i += 1,
            }
        }
    }

    /// `i` is just after `{`.
    fn object(&mut self, i: usize) -> Result<usize, Fail> {
        let mut i = self.skip_ws(i);
        if self.at(i) == Some('}') {
            return Ok(i + 1);
        }
        loop {
            if self.at(i) != Some('"') {
                return Err(fail("Expecting property name enclosed in double quotes", i));
            }
            i = self.string(i + 1)?;
            i = self.skip_ws(i);
            if self.at(i) != Some(':') {
                return Err(fail("Expecting ':' delimiter", i));
            }
            i = self.skip_ws(i + 1);
            i = self.value(i)?;
            i = self.skip_ws(i);
            match self.at(i) {
                Some('}') => return Ok(i + 1),
                Some(',') => i = self.skip_ws(i + 1),
                _ => return Err(fail("Expecting ',' delimiter", i)),
            }
        }
    }

    /// `i` is just after `[`.
    fn array(&mut self, i: usize) -> Result<usize, Fail> {
        let mut i = self.skip_ws(i);
        if self.at(i) == Some(']') {
            return Ok(i + 1);
        }
        loop {
            i = self.value(i)?;
            i = self.skip_ws(i);
            match self.at(i) {
                Some(']') => return Ok(i + 1),
                Some(',') => i = self.skip_ws(i + 1),
                _ => return Err(fail("Expecting ',' delimiter", i)),
            }
        }
    }
}

/// Python's `repr()` of a string: single quotes unless the text holds a single quote and no
/// double quote.
pub fn repr_str(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a float: the shortest round-trip digits, positional between 1e-4 and
/// 1e16, `1e+16` style outside.
pub fn repr_float(value: f64) -> String {
    if value.is_nan() {
        return "nan".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .into();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e6".
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (whole, fraction) = digits.split_at(point as usize);
            format!("{whole}.{fraction}")
        };
        format!("{sign}{body}")
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{first}{rest}e{exp_sign}{:02}", exponent.abs())
    }
}

/// prometheus_client's `floatToGoString`: Python's repr, except that numbers of seven or more
/// integer digits switch to `1.234567e+06`.
pub fn go_float(value: f64) -> String {
    if value == f64::INFINITY {
        return "+Inf".into();
    }
    if value == f64::NEG_INFINITY {
        return "-Inf".into();
    }
    if value.is_nan() {
        return "NaN".into();
    }
    let repr = repr_float(value);
    match repr.find('.') {
        Some(dot) if value > 0.0 && dot > 6 => {
            let mantissa = format!("{}.{}{}", &repr[..1], &repr[1..dot], &repr[dot + 1..]);
            let mantissa = mantissa.trim_end_matches(['0', '.']);
            format!("{mantissa}e+0{}", dot - 1)
        }
        _ => repr,
    }
}

/// Python's `str()` of a JSON value as it arrived in a request (`True`, `None`, `5`, `1.5`).
pub fn str_of(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => repr_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("<list of {} items>", items.len()),
        Value::Object(map) => format!("<dict of {} items>", map.len()),
    }
}

/// The scrubbing vLLM applies to every error message (`sanitize_message`): file paths become
/// `<path>`, then surrounding whitespace goes.
pub fn sanitize_message(message: &str) -> String {
    let message = replace_system_paths(message);
    let message = replace_file_paths(&message);
    message.trim().to_string()
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[\w.\-]+)+` → `<path>`.
fn replace_system_paths(text: &str) -> String {
    const ROOTS: [&str; 9] = [
        "home", "usr", "opt", "var", "tmp", "root", "lib", "mnt", "srv",
    ];
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '/' {
            let matched = ROOTS.iter().find_map(|root| {
                let word: Vec<char> = root.chars().collect();
                let after = i + 1 + word.len();
                if chars.get(i + 1..after) != Some(&word[..]) {
                    return None;
                }
                let end = segments(&chars, after, |c| is_word(c) || c == '.' || c == '-');
                (end > after).then_some(end)
            });
            if let Some(end) = matched {
                out.push_str("<path>");
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Index after the longest run of `/seg` units starting at `i` (each `seg` one or more chars
/// passing `allowed`); `i` itself when there is none.
fn segments(chars: &[char], mut i: usize, allowed: impl Fn(char) -> bool) -> usize {
    while chars.get(i) == Some(&'/') && chars.get(i + 1).is_some_and(|&c| allowed(c)) {
        i += 1;
        while chars.get(i).is_some_and(|&c| allowed(c)) {
            i += 1;
        }
    }
    i
}

/// `(?:/[\w\-]+)+/[\w\-]+\.\w+` → `<path>`.
fn replace_file_paths(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let seg = |c: char| is_word(c) || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '/'
            && let Some(end) = file_path_at(&chars, i, seg)
        {
            out.push_str("<path>");
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn file_path_at(chars: &[char], start: usize, seg: impl Fn(char) -> bool) -> Option<usize> {
    // The `/seg` units from `start`, as (unit start, unit end).
    let mut units = Vec::new();
    let mut i = start;
    while chars.get(i) == Some(&'/') && chars.get(i + 1).is_some_and(|&c| seg(c)) {
        let unit_start = i;
        i += 1;
        while chars.get(i).is_some_and(|&c| seg(c)) {
            i += 1;
        }
        units.push((unit_start, i));
    }
    // Greedy: the last unit (at least the second) followed by `.` and a word character.
    units.iter().skip(1).rev().find_map(|&(_, end)| {
        if chars.get(end) == Some(&'.') && chars.get(end + 1).is_some_and(|&c| is_word(c)) {
            let mut j = end + 1;
            while chars.get(j).is_some_and(|&c| is_word(c)) {
                j += 1;
            }
            Some(j)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> Option<(&'static str, usize)> {
        json_error(text).map(|e| (e.msg, e.pos))
    }

    #[test]
    fn json_errors_are_cpythons() {
        // Each case checked against CPython 3.11's json module.
        assert_eq!(
            error("{not json"),
            Some(("Expecting property name enclosed in double quotes", 1))
        );
        assert_eq!(
            error(r#"{"a": 1,}"#),
            Some(("Expecting property name enclosed in double quotes", 8))
        );
        assert_eq!(error(r#"{"a": 1} x"#), Some(("Extra data", 9)));
        assert_eq!(
            error(r#"{"a": "x"#),
            Some(("Unterminated string starting at", 6))
        );
        assert_eq!(error("[1, 2"), Some(("Expecting ',' delimiter", 5)));
        assert_eq!(error(r#"{"a" 1}"#), Some(("Expecting ':' delimiter", 5)));
        assert_eq!(error(r#"{"a": tru}"#), Some(("Expecting value", 6)));
        assert_eq!(error(""), Some(("Expecting value", 0)));
        assert_eq!(error(r#"{"é": "\q"}"#), Some(("Invalid \\escape", 7)));
        assert_eq!(
            error("{\"a\": \"\u{1}\"}"),
            Some(("Invalid control character at", 7))
        );
        assert_eq!(error(r#"{"a": [1, NaN, -Infinity]}"#), None);
    }

    #[test]
    fn reprs_are_pythons() {
        assert_eq!(repr_str("abc"), "'abc'");
        assert_eq!(
            repr_str("Expecting ',' delimiter"),
            "\"Expecting ',' delimiter\""
        );
        assert_eq!(repr_str("a'b\"c\n"), "'a\\'b\"c\\n'");
        assert_eq!(repr_float(5.5), "5.5");
        assert_eq!(repr_float(3.0), "3.0");
        assert_eq!(repr_float(1e30), "1e+30");
        assert_eq!(repr_float(1.5e-5), "1.5e-05");
        assert_eq!(repr_float(0.0001), "0.0001");
        assert_eq!(repr_float(1234567.0), "1234567.0");
        assert_eq!(repr_float(-0.25), "-0.25");
    }

    #[test]
    fn go_floats_are_prometheus_clients() {
        assert_eq!(go_float(3.0), "3.0");
        assert_eq!(go_float(0.25), "0.25");
        assert_eq!(go_float(123456.0), "123456.0");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(10_000_000.0), "1e+07");
        assert_eq!(go_float(1_795_867_837.0431485), "1.7958678370431485e+09");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
    }

    #[test]
    fn paths_are_scrubbed_like_vllm() {
        assert_eq!(
            sanitize_message("see /tmp/x for more"),
            "see <path> for more"
        );
        assert_eq!(sanitize_message("in a/b/c.py now"), "in a<path> now");
        assert_eq!(
            sanitize_message("The model `meta-llama/Llama-3.1-8B` does not exist."),
            "The model `meta-llama/Llama-3.1-8B` does not exist."
        );
        assert_eq!(sanitize_message("/homework"), "/homework");
        assert_eq!(sanitize_message("  x \n"), "x");
    }
}
