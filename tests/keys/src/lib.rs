//! Test-only key material: fresh signing keys per test run (nothing secret is
//! committed) and a JWT minting helper.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::OsRng;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

/// One private/public PEM pair.
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

/// Keys for every algorithm the gateway accepts.
#[derive(Clone, Debug)]
pub struct TestKeys {
    pub rsa: KeyPair,
    pub ec: KeyPair,
    pub ed: KeyPair,
    pub hmac_secret: String,
}

impl TestKeys {
    pub fn generate() -> Self {
        let rsa_key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("rsa keygen");
        let rsa = KeyPair {
            private_pem: rsa_key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("pem")
                .to_string(),
            public_pem: rsa_key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem"),
        };
        let ec_key = p256::SecretKey::random(&mut OsRng);
        let ec = KeyPair {
            private_pem: ec_key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("pem")
                .to_string(),
            public_pem: ec_key
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem"),
        };
        let ed_key = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let ed = KeyPair {
            private_pem: ed_key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("pem")
                .to_string(),
            public_pem: ed_key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("pem"),
        };
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut OsRng, &mut secret);
        let hmac_secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        Self {
            rsa,
            ec,
            ed,
            hmac_secret,
        }
    }

    fn encoding_key(&self, alg: Algorithm) -> EncodingKey {
        match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(self.rsa.private_pem.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.ec.private_pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(self.ed.private_pem.as_bytes()),
            Algorithm::HS256 => Ok(EncodingKey::from_secret(self.hmac_secret.as_bytes())),
            other => panic!("test-keys does not mint {other:?}"),
        }
        .expect("encoding key")
    }

    /// Signs `claims` with this set's key for `alg`.
    pub fn mint(&self, alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding_key(alg)).expect("sign")
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Base64url without padding, as JWT segments use.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with `alg: none` and no signature.
pub fn unsigned_token(claims: &serde_json::Value) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64url(claims.to_string().as_bytes());
    format!("{header}.{body}.")
}

/// An HS256 token whose HMAC key is the RSA public key PEM: the classic
/// algorithm-confusion attack against verifiers that trust the header.
pub fn confused_token(keys: &TestKeys, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_secret(keys.rsa.public_pem.as_bytes());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}
