use crate::config::{JwtAlgorithm, RegistryConfig};
use crate::error::{RegistryError, invalid};

/// `[[jwt_issuers]]`: an issuer without audiences or keys would let tokens
/// meant for other services pass.
pub(super) fn validate(config: &RegistryConfig) -> Result<(), RegistryError> {
    for (i, issuer) in config.jwt_issuers.iter().enumerate() {
        let field = format!("jwt_issuers[{i}]");
        if issuer.issuer.is_empty() {
            return Err(invalid(format!("{field}.issuer"), "must not be empty"));
        }
        if issuer.audiences.is_empty() {
            return Err(invalid(
                format!("{field}.audiences"),
                "at least one audience is required (tokens for other services must not pass)",
            ));
        }
        if issuer.jwks.is_none() && issuer.keys.is_empty() {
            return Err(invalid(field, "needs `jwks` or `keys`"));
        }
        for (k, key) in issuer.keys.iter().enumerate() {
            let kf = format!("{field}.keys[{k}]");
            match (key.alg, &key.pem, &key.secret) {
                (JwtAlgorithm::HS256, None, Some(s)) if s.len() >= 32 => {}
                (JwtAlgorithm::HS256, None, Some(_)) => {
                    return Err(invalid(
                        format!("{kf}.secret"),
                        "HS256 secrets need >= 32 bytes",
                    ));
                }
                (JwtAlgorithm::HS256, _, _) => {
                    return Err(invalid(kf, "HS256 keys take `secret` and no `pem`"));
                }
                (_, Some(_), None) => {}
                _ => {
                    return Err(invalid(
                        kf,
                        "public-key algorithms take `pem` and no `secret`",
                    ));
                }
            }
        }
    }
    Ok(())
}
