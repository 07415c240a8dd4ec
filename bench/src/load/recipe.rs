//! What one benchmark request looks like, independent of where it is sent.

use serde::Serialize;

/// One request, sent unchanged again and again.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecipe {
    /// Short description for reports (`chat, 1 KiB body`).
    pub label: String,
    pub method: String,
    /// Path and query, appended to the gateway's base URL.
    pub path: String,
    /// Headers; left out of reports because they carry the API key.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub body_bytes: usize,
}

impl RequestRecipe {
    /// A JSON POST.
    pub fn post_json(
        label: impl Into<String>,
        path: impl Into<String>,
        body: &serde_json::Value,
    ) -> Self {
        let body = body.to_string().into_bytes();
        Self {
            label: label.into(),
            method: "POST".to_owned(),
            path: path.into(),
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body_bytes: body.len(),
            body,
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}
