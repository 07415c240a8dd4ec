//! Model allowlist patterns: exact names, `*` wildcards and access groups.

use crate::config::Model;

/// One entry of a tenant's `models` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelPattern<'a> {
    /// `group:<name>`: every model in that access group.
    Group(&'a str),
    /// A name where `*` matches any run of characters (`llama-3.1-*`, `*`).
    Glob(&'a str),
}

impl<'a> ModelPattern<'a> {
    pub fn parse(pattern: &'a str) -> Self {
        match pattern.strip_prefix("group:") {
            Some(group) => ModelPattern::Group(group),
            None => ModelPattern::Glob(pattern),
        }
    }

    pub fn matches(&self, name: &str, model: &Model) -> bool {
        match self {
            ModelPattern::Group(g) => model.groups.iter().any(|m| m == g),
            ModelPattern::Glob(p) => glob_match(p.as_bytes(), name.as_bytes()),
        }
    }
}

/// Iterative glob with `*` only; linear backtracking keeps it O(n·m) worst case.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = name.get(n) {
        let at = pattern.get(p).copied();
        if at == Some(b'*') {
            star = Some((p, n));
            p += 1;
        } else if at == Some(c) {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern.iter().skip(p).all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(b"llama-3.1-*", b"llama-3.1-8b-instruct"));
        assert!(!glob_match(b"llama-3.1-*", b"llama-3.2-1b"));
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"exact", b"exact"));
        assert!(!glob_match(b"exact", b"exactly"));
        assert!(glob_match(b"*-instruct", b"qwen-7b-instruct"));
        assert!(glob_match(b"a*b*c", b"aXbYc"));
        assert!(!glob_match(b"a*b*c", b"aXbY"));
    }
}
