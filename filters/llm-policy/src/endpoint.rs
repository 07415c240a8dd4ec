//! Which OpenAI endpoint a request is for.
//!
//! Default deny: a path under the API that the policy does not know gets
//! 404 here instead of reaching vLLM unchecked (vLLM serves more routes than
//! the gateway polices, some without a `model` to check).

use crate::error::PolicyError;

/// An inference endpoint whose body the policy parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
        }
    }

    /// Body field that holds the prompt (named in context-length errors).
    pub fn prompt_param(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "messages",
            Endpoint::Completions => "prompt",
            Endpoint::Embeddings | Endpoint::Responses => "input",
        }
    }

    /// Body field the gateway writes the output cap into when the client sent none.
    pub fn max_tokens_param(self) -> Option<&'static str> {
        match self {
            Endpoint::ChatCompletions | Endpoint::Completions => Some("max_tokens"),
            Endpoint::Responses => Some("max_output_tokens"),
            Endpoint::Embeddings => None,
        }
    }

    /// Whether the endpoint generates tokens (and may stream them).
    pub fn generates(self) -> bool {
        self != Endpoint::Embeddings
    }
}

/// What the policy does with a request, known from its method and path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/models`: answered by the gateway from the tenant's allowlist.
    ListModels,
    /// `GET /v1/models/{id}`: answered by the gateway.
    RetrieveModel(String),
    /// A POST whose body the policy checks and forwards.
    Inference(Endpoint),
}

/// Classifies a request; unknown paths and wrong methods are refused.
pub fn classify(method: &str, path: &str) -> Result<Route, PolicyError> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let route = match path {
        "/v1/chat/completions" => Route::Inference(Endpoint::ChatCompletions),
        "/v1/completions" => Route::Inference(Endpoint::Completions),
        "/v1/embeddings" => Route::Inference(Endpoint::Embeddings),
        "/v1/responses" => Route::Inference(Endpoint::Responses),
        "/v1/models" => Route::ListModels,
        _ => match path.strip_prefix("/v1/models/") {
            Some(id) if !id.is_empty() => Route::RetrieveModel(id.to_owned()),
            _ => {
                return Err(PolicyError::UnknownUrl {
                    method: method.to_owned(),
                    path: path.to_owned(),
                });
            }
        },
    };
    let expected = match route {
        Route::Inference(_) => "POST",
        Route::ListModels | Route::RetrieveModel(_) => "GET",
    };
    if method != expected {
        return Err(PolicyError::MethodNotAllowed {
            method: method.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_routes() {
        assert_eq!(
            classify("POST", "/v1/chat/completions"),
            Ok(Route::Inference(Endpoint::ChatCompletions))
        );
        assert_eq!(
            classify("POST", "/v1/embeddings?x=1"),
            Ok(Route::Inference(Endpoint::Embeddings))
        );
        assert_eq!(classify("GET", "/v1/models"), Ok(Route::ListModels));
        assert_eq!(
            classify("GET", "/v1/models/llama-3.1-8b-instruct"),
            Ok(Route::RetrieveModel("llama-3.1-8b-instruct".into()))
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        for path in [
            "/v1/audio/speech",
            "/tokenize",
            "/v1/models/",
            "/v1/chat/completions/",
            "/V1/models",
        ] {
            assert!(
                matches!(classify("POST", path), Err(PolicyError::UnknownUrl { .. })),
                "{path}"
            );
        }
        assert!(matches!(
            classify("GET", "/v1/chat/completions"),
            Err(PolicyError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            classify("DELETE", "/v1/models/x"),
            Err(PolicyError::MethodNotAllowed { .. })
        ));
    }
}
