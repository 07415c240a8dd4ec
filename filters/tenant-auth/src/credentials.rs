//! Which credential a request presents.
//!
//! Precedence: `Authorization` over `x-api-key` over the mTLS peer. A bearer
//! token that looks like a JWT (three dot-separated parts) is verified as
//! one; anything else is treated as an API key.

/// A credential taken from a request, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    ApiKey(&'a str),
    Jwt(&'a str),
    /// First URI SAN of the verified client certificate.
    Spiffe(&'a str),
}

/// Why no credential could be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialProblem {
    Missing,
    /// `Authorization` present but not `Bearer <token>`.
    MalformedAuthorization,
}

/// Picks the credential from the request's `authorization`, `x-api-key`
/// and mTLS peer URI SAN.
pub fn extract<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
    peer_uri_san: Option<&'a str>,
) -> Result<Credential<'a>, CredentialProblem> {
    if let Some(value) = authorization {
        let token = bearer_token(value).ok_or(CredentialProblem::MalformedAuthorization)?;
        return Ok(if looks_like_jwt(token) {
            Credential::Jwt(token)
        } else {
            Credential::ApiKey(token)
        });
    }
    if let Some(key) = x_api_key.map(str::trim).filter(|k| !k.is_empty()) {
        return Ok(Credential::ApiKey(key));
    }
    match peer_uri_san.filter(|s| s.starts_with("spiffe://")) {
        Some(id) => Ok(Credential::Spiffe(id)),
        None => Err(CredentialProblem::Missing),
    }
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|&b| b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_api_key() {
        assert_eq!(
            extract(Some("Bearer sk-abc"), None, None),
            Ok(Credential::ApiKey("sk-abc"))
        );
        assert_eq!(
            extract(Some("bearer  sk-abc "), None, None),
            Ok(Credential::ApiKey("sk-abc"))
        );
    }

    #[test]
    fn bearer_jwt() {
        assert_eq!(
            extract(Some("Bearer eyJh.eyJi.sig"), None, None),
            Ok(Credential::Jwt("eyJh.eyJi.sig"))
        );
    }

    #[test]
    fn authorization_wins_over_others() {
        assert_eq!(
            extract(Some("Bearer sk-a"), Some("sk-b"), Some("spiffe://x/y")),
            Ok(Credential::ApiKey("sk-a"))
        );
        assert_eq!(
            extract(None, Some("sk-b"), Some("spiffe://x/y")),
            Ok(Credential::ApiKey("sk-b"))
        );
        assert_eq!(
            extract(None, None, Some("spiffe://x/y")),
            Ok(Credential::Spiffe("spiffe://x/y"))
        );
    }

    #[test]
    fn malformed_and_missing() {
        for bad in [
            "Basic dXNlcjpw",
            "Bearer",
            "Bearer ",
            "sk-abc",
            "Bearer a b",
        ] {
            assert_eq!(
                extract(Some(bad), None, None),
                Err(CredentialProblem::MalformedAuthorization),
                "{bad}"
            );
        }
        assert_eq!(extract(None, None, None), Err(CredentialProblem::Missing));
        assert_eq!(
            extract(None, Some("  "), None),
            Err(CredentialProblem::Missing)
        );
        assert_eq!(
            extract(None, None, Some("https://x")),
            Err(CredentialProblem::Missing)
        );
    }
}
