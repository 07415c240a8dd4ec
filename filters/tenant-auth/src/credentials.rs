//! Which credentials a request presents.
//!
//! A request may carry up to three: `Authorization: Bearer`, `x-api-key`
//! and the mTLS peer's certificate. All of them are taken, not the first
//! one found: the authenticator verifies each and refuses the request when
//! they do not name the same tenant (a gateway that silently picks one
//! lets a client be billed as one tenant and logged as another). A bearer
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

/// The credentials of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented<'a> {
    /// From headers (`Authorization`, then `x-api-key`): each must verify.
    pub explicit: Vec<Credential<'a>>,
    /// The mTLS peer's SPIFFE ID, when the connection has one.
    pub peer: Option<&'a str>,
}

/// Takes every credential from the request's `authorization`, `x-api-key`
/// and mTLS peer URI SAN.
pub fn presented<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
    peer_uri_san: Option<&'a str>,
) -> Result<Presented<'a>, CredentialProblem> {
    let mut explicit = Vec::with_capacity(2);
    if let Some(value) = authorization {
        let token = bearer_token(value).ok_or(CredentialProblem::MalformedAuthorization)?;
        explicit.push(if looks_like_jwt(token) {
            Credential::Jwt(token)
        } else {
            Credential::ApiKey(token)
        });
    }
    if let Some(key) = api_key(x_api_key) {
        explicit.push(Credential::ApiKey(key));
    }
    let peer = peer_uri_san.filter(|s| s.starts_with("spiffe://"));
    if explicit.is_empty() && peer.is_none() {
        return Err(CredentialProblem::Missing);
    }
    Ok(Presented { explicit, peer })
}

/// Whether the headers present a credential (an `Authorization`, even one
/// [`presented`] will refuse as malformed, or a non-blank `x-api-key`).
pub fn in_headers(authorization: Option<&str>, x_api_key: Option<&str>) -> bool {
    authorization.is_some() || api_key(x_api_key).is_some()
}

/// The `x-api-key` value as a credential: blank is none.
fn api_key(x_api_key: Option<&str>) -> Option<&str> {
    x_api_key.map(str::trim).filter(|k| !k.is_empty())
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

    fn only(c: Credential<'_>) -> Presented<'_> {
        Presented {
            explicit: vec![c],
            peer: None,
        }
    }

    #[test]
    fn bearer_api_key() {
        assert_eq!(
            presented(Some("Bearer sk-abc"), None, None),
            Ok(only(Credential::ApiKey("sk-abc")))
        );
        assert_eq!(
            presented(Some("bearer  sk-abc "), None, None),
            Ok(only(Credential::ApiKey("sk-abc")))
        );
    }

    #[test]
    fn bearer_jwt() {
        assert_eq!(
            presented(Some("Bearer eyJh.eyJi.sig"), None, None),
            Ok(only(Credential::Jwt("eyJh.eyJi.sig")))
        );
    }

    #[test]
    fn every_credential_is_taken() {
        assert_eq!(
            presented(Some("Bearer sk-a"), Some("sk-b"), Some("spiffe://x/y")),
            Ok(Presented {
                explicit: vec![Credential::ApiKey("sk-a"), Credential::ApiKey("sk-b")],
                peer: Some("spiffe://x/y"),
            })
        );
        assert_eq!(
            presented(None, None, Some("spiffe://x/y")),
            Ok(Presented {
                explicit: vec![],
                peer: Some("spiffe://x/y"),
            })
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
                presented(Some(bad), Some("sk-ok"), None),
                Err(CredentialProblem::MalformedAuthorization),
                "{bad}"
            );
        }
        assert_eq!(presented(None, None, None), Err(CredentialProblem::Missing));
        assert_eq!(
            presented(None, Some("  "), None),
            Err(CredentialProblem::Missing)
        );
        assert_eq!(
            presented(None, None, Some("https://x")),
            Err(CredentialProblem::Missing)
        );
    }
}
