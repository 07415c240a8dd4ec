//! `tenant_auth::Authenticator::authenticate` on any header values: any
//! result is fine, a panic is not.
//!
//! Input layout (byte 0 is the mode):
//!
//! - bit 7 clear, "headers": the rest is split on `\n` into authorization,
//!   x-api-key and the peer's URI SAN (UTF-8, lossy); bits 0..=2 say which
//!   of the three are present.
//! - bit 7 set, "jwt": the rest is split on `\n` into a JOSE header, claims
//!   and a signature; the token is `b64("{\"" + header).b64(claims).sig`,
//!   where sig is HS256 over the first two parts with the configured secret
//!   when bit 6 is set (so mutated claims get past the signature check and
//!   into claim validation), else b64(signature part). Bit 0 adds the
//!   tenant's API key in x-api-key, bit 1 its SPIFFE id as the peer.
//!
//! Every input is also sent as `Authorization: Bearer <input, lossy>`.
#![no_main]

use std::borrow::Cow;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tenant_auth::Authenticator;
use tenant_registry::api_key_digest_hex;

/// A fixed clock (2026-01-01T00:00:00Z), so every run of an input agrees.
const NOW: i64 = 1_767_225_600;
const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "llm-gateway";
const HMAC_SECRET: &str = "fuzz-hmac-secret-0123456789abcdef";
const API_KEY: &str = "sk-fuzz-live";
const SPIFFE_ID: &str = "spiffe://corp/ns/acme/sa/app";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let config = serde_json::json!({
            "registry": {
                "tiers": { "gold": {} },
                "jwt_issuers": [{
                    "issuer": ISSUER,
                    "audiences": [AUDIENCE],
                    "tenant_claim": "org",
                    "leeway_seconds": 5,
                    "keys": [{ "kid": "hs-1", "alg": "HS256", "secret": HMAC_SECRET }]
                }],
                "tenants": [{
                    "id": "acme", "tier": "gold",
                    "api_keys": [{ "id": "live", "sha256": api_key_digest_hex(API_KEY) }],
                    "spiffe_ids": [SPIFFE_ID]
                }]
            }
        });
        Authenticator::from_json(config.to_string().as_bytes()).expect("fuzz auth config loads")
    })
}

fn hs256(signing_input: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_SECRET.as_bytes()).expect("any key size");
    mac.update(signing_input.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fuzz_target!(|data: &[u8]| {
    let auth = authenticator();
    let whole = format!("Bearer {}", lossy(data));
    let _ = auth.authenticate(Some(&whole), None, None, NOW);

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let (a, b, c) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if mode & 0x80 == 0 {
        let authorization = (mode & 1 != 0).then(|| lossy(a));
        let api_key = (mode & 2 != 0).then(|| lossy(b));
        let peer = (mode & 4 != 0).then(|| lossy(c));
        let _ = auth.authenticate(
            authorization.as_deref(),
            api_key.as_deref(),
            peer.as_deref(),
            NOW,
        );
    } else {
        let mut header = b"{\"".to_vec();
        header.extend_from_slice(a);
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&header),
            URL_SAFE_NO_PAD.encode(b)
        );
        let signature = if mode & 0x40 != 0 {
            hs256(&signing_input)
        } else {
            c.to_vec()
        };
        let token = format!(
            "Bearer {signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        );
        let api_key = (mode & 1 != 0).then_some(API_KEY);
        let peer = (mode & 2 != 0).then_some(SPIFFE_ID);
        let _ = auth.authenticate(Some(&token), api_key, peer, NOW);
    }
});
