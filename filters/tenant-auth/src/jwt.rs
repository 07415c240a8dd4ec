//! JWT verification against the registry's trusted issuers.
//!
//! Keys are indexed by `kid`, and every key is pinned to one algorithm: a
//! token is only ever checked with the algorithm its key was configured for.
//! That is what refuses algorithm confusion (an HS256 token "signed" with an
//! RSA public key finds no HS256 key under that `kid`) and `alg: none`
//! (not an algorithm jsonwebtoken can even parse).

use hashbrown::HashMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tenant_registry::{JwtAlgorithm, JwtIssuer};
use thiserror::Error;

/// A key that cannot be used; names the registry field.
#[derive(Debug, Error)]
#[error("{field}: {reason}")]
pub struct JwtKeyError {
    pub field: String,
    pub reason: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum JwtError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm is not accepted")]
    AlgorithmNotAccepted,
    #[error("token names a key this gateway does not know")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not trusted")]
    WrongIssuer,
    #[error("token audience does not include this gateway")]
    WrongAudience,
    #[error("token lacks a required claim")]
    MissingClaim,
}

struct VerifyKey {
    issuer: usize,
    validation: Validation,
    key: DecodingKey,
}

/// Verifies tokens and returns the issuer and the tenant claim's value.
pub struct JwtVerifier {
    issuers: Vec<JwtIssuer>,
    keys: Vec<VerifyKey>,
    by_kid: HashMap<String, Vec<usize>>,
    without_kid: Vec<usize>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuers", &self.issuers.len())
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::HS256 => Algorithm::HS256,
    }
}

/// The algorithm a JWKS entry is pinned to: its `alg`, or the one its key
/// type implies. Symmetric JWKS keys must say `alg` explicitly.
fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    match (jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(KeyAlgorithm::RS256), AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
        (Some(KeyAlgorithm::ES256), AlgorithmParameters::EllipticCurve(_)) => {
            Some(Algorithm::ES256)
        }
        (Some(KeyAlgorithm::EdDSA), AlgorithmParameters::OctetKeyPair(_)) => Some(Algorithm::EdDSA),
        (Some(KeyAlgorithm::HS256), AlgorithmParameters::OctetKey(_)) => Some(Algorithm::HS256),
        (None, AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
        (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        (None, AlgorithmParameters::OctetKeyPair(_)) => Some(Algorithm::EdDSA),
        _ => None,
    }
}

fn decoding_key(
    alg: Algorithm,
    pem: Option<&str>,
    secret: Option<&str>,
) -> Result<DecodingKey, String> {
    let result = match (alg, pem, secret) {
        (Algorithm::HS256, _, Some(s)) => Ok(DecodingKey::from_secret(s.as_bytes())),
        (Algorithm::RS256, Some(p), _) => DecodingKey::from_rsa_pem(p.as_bytes()),
        (Algorithm::ES256, Some(p), _) => DecodingKey::from_ec_pem(p.as_bytes()),
        (Algorithm::EdDSA, Some(p), _) => DecodingKey::from_ed_pem(p.as_bytes()),
        _ => return Err("key material does not match the algorithm".into()),
    };
    result.map_err(|e| e.to_string())
}

impl JwtVerifier {
    pub fn new(issuers: &[JwtIssuer]) -> Result<Self, JwtKeyError> {
        let mut verifier = JwtVerifier {
            issuers: issuers.to_vec(),
            keys: Vec::new(),
            by_kid: HashMap::new(),
            without_kid: Vec::new(),
        };
        for (i, issuer) in issuers.iter().enumerate() {
            for (k, key) in issuer.keys.iter().enumerate() {
                let field = format!("jwt_issuers[{i}].keys[{k}]");
                let alg = algorithm(key.alg);
                let decoding = decoding_key(alg, key.pem.as_deref(), key.secret.as_deref())
                    .map_err(|reason| JwtKeyError { field, reason })?;
                verifier.add(i, issuer, alg, decoding, key.kid.clone());
            }
            if let Some(jwks) = &issuer.jwks {
                let field = format!("jwt_issuers[{i}].jwks");
                let set: JwkSet = serde_json::from_str(jwks).map_err(|e| JwtKeyError {
                    field: field.clone(),
                    reason: e.to_string(),
                })?;
                for (k, jwk) in set.keys.iter().enumerate() {
                    let alg = jwk_algorithm(jwk).ok_or_else(|| JwtKeyError {
                        field: format!("{field}.keys[{k}]"),
                        reason: "unsupported key type/alg (RS256, ES256, EdDSA, or HS256 with explicit alg)".into(),
                    })?;
                    let decoding = DecodingKey::from_jwk(jwk).map_err(|e| JwtKeyError {
                        field: format!("{field}.keys[{k}]"),
                        reason: e.to_string(),
                    })?;
                    verifier.add(i, issuer, alg, decoding, jwk.common.key_id.clone());
                }
            }
        }
        Ok(verifier)
    }

    fn add(
        &mut self,
        index: usize,
        issuer: &JwtIssuer,
        alg: Algorithm,
        key: DecodingKey,
        kid: Option<String>,
    ) {
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&issuer.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = issuer.leeway_seconds;
        let position = self.keys.len();
        self.keys.push(VerifyKey {
            issuer: index,
            validation,
            key,
        });
        match kid {
            Some(kid) => self.by_kid.entry(kid).or_default().push(position),
            None => self.without_kid.push(position),
        }
    }

    /// Verifies `token`; on success returns the issuer and the value of its
    /// tenant claim.
    pub fn verify(&self, token: &str) -> Result<(&JwtIssuer, String), JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
                JwtError::AlgorithmNotAccepted
            }
            _ => JwtError::Malformed,
        })?;
        let candidates = match &header.kid {
            Some(kid) => self.by_kid.get(kid).ok_or(JwtError::UnknownKey)?,
            None => &self.without_kid,
        };
        let mut pinned = candidates
            .iter()
            .filter_map(|&i| self.keys.get(i))
            .filter(|k| k.validation.algorithms.contains(&header.alg))
            .peekable();
        if pinned.peek().is_none() {
            return Err(if candidates.is_empty() {
                JwtError::UnknownKey
            } else {
                JwtError::AlgorithmNotAccepted
            });
        }
        let mut error = JwtError::BadSignature;
        for key in pinned {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &key.validation,
            ) {
                Ok(data) => {
                    let Some(issuer) = self.issuers.get(key.issuer) else {
                        continue;
                    };
                    return match data.claims.get(&issuer.tenant_claim) {
                        Some(serde_json::Value::String(t)) if !t.is_empty() => {
                            Ok((issuer, t.clone()))
                        }
                        _ => Err(JwtError::MissingClaim),
                    };
                }
                // A signature that verified under this key makes its claim
                // errors the most telling; keep looking only past bad signatures.
                Err(e) => {
                    let mapped = map_error(e.kind());
                    if mapped != JwtError::BadSignature {
                        error = mapped;
                    }
                }
            }
        }
        Err(error)
    }
}

fn map_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => JwtError::MissingClaim,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => JwtError::AlgorithmNotAccepted,
        _ => JwtError::Malformed,
    }
}
