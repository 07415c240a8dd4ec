use std::sync::OnceLock;

use jsonwebtoken::Algorithm;
use serde_json::json;
use tenant_registry::api_key_digest_hex;
use test_keys::{TestKeys, confused_token, now, unsigned_token};

use super::*;
use crate::jwt::JwtError;

const ISS: &str = "https://idp.test";
const AUD: &str = "llm-gateway";

fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(TestKeys::generate)
}

fn authenticator() -> Authenticator {
    let k = keys();
    let config = json!({
        "registry": {
            "tiers": { "gold": {}, "free": {} },
            "jwt_issuers": [{
                "issuer": ISS,
                "audiences": [AUD],
                "tenant_claim": "org",
                "leeway_seconds": 5,
                "keys": [
                    { "kid": "rsa-1", "alg": "RS256", "pem": k.rsa.public_pem },
                    { "kid": "ec-1", "alg": "ES256", "pem": k.ec.public_pem },
                    { "kid": "ed-1", "alg": "EdDSA", "pem": k.ed.public_pem },
                    { "kid": "hs-1", "alg": "HS256", "secret": k.hmac_secret }
                ]
            }],
            "tenants": [
                { "id": "acme", "tier": "gold",
                  "api_keys": [
                      { "id": "live", "sha256": api_key_digest_hex("sk-acme-live") },
                      { "id": "old", "sha256": api_key_digest_hex("sk-acme-old"), "revoked": true },
                      { "id": "temp", "sha256": api_key_digest_hex("sk-acme-temp"), "expires_at": "2001-01-01T00:00:00Z" }
                  ],
                  "spiffe_ids": ["spiffe://corp/ns/acme/sa/app"] },
                { "id": "other", "tier": "free",
                  "api_keys": [{ "id": "o", "sha256": api_key_digest_hex("sk-other") }],
                  "spiffe_ids": ["spiffe://corp/ns/other/sa/app"] },
                { "id": "dormant", "tier": "free", "disabled": true,
                  "api_keys": [{ "id": "k", "sha256": api_key_digest_hex("sk-dormant") }] }
            ]
        }
    });
    Authenticator::from_json(config.to_string().as_bytes()).expect("config loads")
}

fn claims(org: &str) -> serde_json::Value {
    json!({ "iss": ISS, "aud": AUD, "org": org, "sub": "user-1", "exp": now() + 300 })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn auth_jwt(a: &Authenticator, token: &str) -> Result<Identity, AuthError> {
    a.authenticate(Some(&bearer(token)), None, None, now())
}

#[test]
fn api_key_in_either_header() {
    let a = authenticator();
    let id = a
        .authenticate(Some("Bearer sk-acme-live"), None, None, now())
        .unwrap();
    assert_eq!(
        (id.tenant_id.as_str(), id.tier.as_str(), id.method),
        ("acme", "gold", AuthMethod::ApiKey)
    );
    assert_eq!(id.credential_id, "live");
    assert_eq!(id.credential(), "api_key:live");
    // A header value whatever a registry entry holds.
    let odd = Identity {
        credential_id: "k\r\nx-injected: 1 é".into(),
        ..id.clone()
    };
    assert_eq!(odd.credential(), "api_key:k__x-injected:_1__");
    let id = a
        .authenticate(None, Some("sk-acme-live"), None, now())
        .unwrap();
    assert_eq!(id.tenant_id, "acme");
}

#[test]
fn bad_api_keys() {
    let a = authenticator();
    let t = now();
    assert_eq!(
        a.authenticate(None, None, None, t),
        Err(AuthError::MissingCredentials)
    );
    assert_eq!(
        a.authenticate(Some("Basic abc"), None, None, t),
        Err(AuthError::MalformedAuthorization)
    );
    assert_eq!(
        a.authenticate(Some("Bearer sk-nope"), None, None, t),
        Err(AuthError::UnknownApiKey)
    );
    assert_eq!(
        a.authenticate(Some("Bearer sk-acme-old"), None, None, t),
        Err(AuthError::RevokedApiKey)
    );
    assert_eq!(
        a.authenticate(Some("Bearer sk-acme-temp"), None, None, t),
        Err(AuthError::ExpiredApiKey)
    );
    assert_eq!(
        a.authenticate(Some("Bearer sk-dormant"), None, None, t),
        Err(AuthError::TenantDisabled)
    );
}

#[test]
fn jwt_every_algorithm() {
    let a = authenticator();
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
        (Algorithm::HS256, "hs-1"),
    ] {
        let token = keys().mint(alg, Some(kid), &claims("acme"));
        let id = auth_jwt(&a, &token).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(
            (id.tenant_id.as_str(), id.method),
            ("acme", AuthMethod::Jwt)
        );
    }
}

#[test]
fn jwt_time_and_audience_checks() {
    let a = authenticator();
    let mint = |c: serde_json::Value| keys().mint(Algorithm::ES256, Some("ec-1"), &c);
    let mut expired = claims("acme");
    expired["exp"] = json!(now() - 60);
    assert_eq!(
        auth_jwt(&a, &mint(expired)),
        Err(AuthError::InvalidToken(JwtError::Expired))
    );
    // Within the configured leeway: still accepted.
    let mut just_expired = claims("acme");
    just_expired["exp"] = json!(now() - 2);
    assert!(auth_jwt(&a, &mint(just_expired)).is_ok());
    let mut early = claims("acme");
    early["nbf"] = json!(now() + 120);
    assert_eq!(
        auth_jwt(&a, &mint(early)),
        Err(AuthError::InvalidToken(JwtError::NotYetValid))
    );
    let mut issuer = claims("acme");
    issuer["iss"] = json!("https://evil.test");
    assert_eq!(
        auth_jwt(&a, &mint(issuer)),
        Err(AuthError::InvalidToken(JwtError::WrongIssuer))
    );
    let mut audience = claims("acme");
    audience["aud"] = json!("other-service");
    assert_eq!(
        auth_jwt(&a, &mint(audience)),
        Err(AuthError::InvalidToken(JwtError::WrongAudience))
    );
    let mut no_exp = claims("acme");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        auth_jwt(&a, &mint(no_exp)),
        Err(AuthError::InvalidToken(JwtError::MissingClaim))
    );
    let mut no_org = claims("acme");
    no_org.as_object_mut().unwrap().remove("org");
    assert_eq!(
        auth_jwt(&a, &mint(no_org)),
        Err(AuthError::InvalidToken(JwtError::MissingClaim))
    );
    assert_eq!(
        auth_jwt(&a, &mint(claims("ghost"))),
        Err(AuthError::UnknownTenant)
    );
    assert_eq!(
        auth_jwt(&a, &mint(claims("dormant"))),
        Err(AuthError::TenantDisabled)
    );
}

#[test]
fn jwt_attacks_refused() {
    let a = authenticator();
    let none = unsigned_token(&claims("acme"));
    assert!(
        matches!(auth_jwt(&a, &none), Err(AuthError::InvalidToken(_))),
        "alg none"
    );
    let confused = confused_token(keys(), Some("rsa-1"), &claims("acme"));
    assert_eq!(
        auth_jwt(&a, &confused),
        Err(AuthError::InvalidToken(JwtError::AlgorithmNotAccepted))
    );
    let unknown_kid = keys().mint(Algorithm::RS256, Some("rsa-9"), &claims("acme"));
    assert_eq!(
        auth_jwt(&a, &unknown_kid),
        Err(AuthError::InvalidToken(JwtError::UnknownKey))
    );
    // Tamper: swap the payload for another tenant's, keep the signature.
    let good = keys().mint(Algorithm::RS256, Some("rsa-1"), &claims("acme"));
    let other = keys().mint(Algorithm::RS256, Some("rsa-1"), &claims("dormant"));
    let g: Vec<&str> = good.split('.').collect();
    let o: Vec<&str> = other.split('.').collect();
    let tampered = format!("{}.{}.{}", g[0], o[1], g[2]);
    assert_eq!(
        auth_jwt(&a, &tampered),
        Err(AuthError::InvalidToken(JwtError::BadSignature))
    );
    // Signed by a key the gateway never trusted, under a trusted kid.
    let stranger = TestKeys::generate();
    let forged = stranger.mint(Algorithm::ES256, Some("ec-1"), &claims("acme"));
    assert_eq!(
        auth_jwt(&a, &forged),
        Err(AuthError::InvalidToken(JwtError::BadSignature))
    );
}

#[test]
fn mtls_spiffe() {
    let a = authenticator();
    let id = a
        .authenticate(None, None, Some("spiffe://corp/ns/acme/sa/app"), now())
        .unwrap();
    assert_eq!(
        (id.tenant_id.as_str(), id.method),
        ("acme", AuthMethod::Mtls)
    );
    assert_eq!(
        a.authenticate(None, None, Some("spiffe://corp/ns/other/sa/x"), now()),
        Err(AuthError::UnknownSpiffeId)
    );
}

#[test]
fn errors_map_to_status_and_challenge() {
    let e = AuthError::UnknownApiKey.into_gateway_error_in("gw");
    assert_eq!((e.status, e.code), (401, "invalid_api_key"));
    assert!(
        e.headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.contains("invalid_token"))
    );
    let e = AuthError::TenantDisabled.into_gateway_error_in("gw");
    assert_eq!((e.status, e.code), (403, "tenant_disabled"));
    assert!(e.headers.is_empty());
}

#[test]
fn bad_config_names_the_field() {
    let config = json!({ "registry": { "tiers": { "t": {} }, "jwt_issuers": [{
        "issuer": ISS, "audiences": [AUD],
        "keys": [{ "kid": "x", "alg": "RS256", "pem": "not a pem" }] }] } });
    let err = Authenticator::from_json(config.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("jwt_issuers[0].keys[0]"), "{err}");
}

#[test]
fn jwks_keys_are_pinned_to_their_algorithm() {
    use jsonwebtoken::jwk::Jwk;
    let k = keys();
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(k.ec.private_pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("jwks-ec".into());
    let jwks = json!({ "keys": [jwk] }).to_string();
    let config = json!({ "registry": { "tiers": { "t": {} },
        "jwt_issuers": [{ "issuer": ISS, "audiences": [AUD], "tenant_claim": "org", "jwks": jwks }],
        "tenants": [{ "id": "acme", "tier": "t" }] } });
    let a = Authenticator::from_json(config.to_string().as_bytes()).unwrap();
    let token = k.mint(Algorithm::ES256, Some("jwks-ec"), &claims("acme"));
    assert_eq!(auth_jwt(&a, &token).unwrap().tenant_id, "acme");
}

#[test]
fn credentials_of_two_tenants_are_refused() {
    let a = authenticator();
    let t = now();
    // Finding 8: a key of tenant A in Authorization and of tenant B in x-api-key.
    assert_eq!(
        a.authenticate(Some("Bearer sk-acme-live"), Some("sk-other"), None, t),
        Err(AuthError::ConflictingCredentials)
    );
    // A JWT of one tenant with the other's key.
    let token = keys().mint(Algorithm::RS256, Some("rsa-1"), &claims("acme"));
    assert_eq!(
        a.authenticate(Some(&bearer(&token)), Some("sk-other"), None, t),
        Err(AuthError::ConflictingCredentials)
    );
    // A registered client certificate of another tenant.
    assert_eq!(
        a.authenticate(
            Some("Bearer sk-acme-live"),
            None,
            Some("spiffe://corp/ns/other/sa/app"),
            t
        ),
        Err(AuthError::ConflictingCredentials)
    );
    // Every credential must verify: a bad second key is not ignored.
    assert_eq!(
        a.authenticate(Some("Bearer sk-acme-live"), Some("sk-nope"), None, t),
        Err(AuthError::UnknownApiKey)
    );
}

#[test]
fn credentials_that_agree_pass() {
    let a = authenticator();
    let t = now();
    let id = a
        .authenticate(
            Some("Bearer sk-acme-live"),
            Some("sk-acme-live"),
            Some("spiffe://corp/ns/acme/sa/app"),
            t,
        )
        .unwrap();
    assert_eq!(
        (id.tenant_id.as_str(), id.method),
        ("acme", AuthMethod::ApiKey)
    );
    // An unregistered peer does not veto a valid key.
    let id = a
        .authenticate(
            Some("Bearer sk-other"),
            None,
            Some("spiffe://elsewhere/x"),
            t,
        )
        .unwrap();
    assert_eq!(id.tenant_id, "other");
}

/// `acme` with one API key that never expires: no SPIFFE id, no issuer.
fn one_plain_key() -> Authenticator {
    Authenticator::from_json(
        json!({
            "registry": {
                "tiers": { "free": {} },
                "tenants": [{ "id": "acme", "tier": "free",
                    "api_keys": [{ "id": "live", "sha256": api_key_digest_hex("sk-acme-live") }] }]
            }
        })
        .to_string()
        .as_bytes(),
    )
    .expect("config loads")
}

/// Where no tenant is registered by SPIFFE id, the peer is asked for only
/// when it can change the answer: for every header combination that says
/// it need not be, the answer with any peer is the answer without one.
#[test]
fn the_peer_is_needed_only_where_it_can_change_the_answer() {
    let k = keys();
    let no_mtls = one_plain_key();
    let token = k.mint(Algorithm::RS256, Some("rsa-1"), &claims("acme"));
    let jwt = bearer(&token);
    let authorizations = [
        None,
        Some("Bearer sk-acme-live"),
        Some("Bearer sk-nope"),
        Some("Basic abc"),
        Some(jwt.as_str()),
    ];
    let api_keys = [None, Some("sk-acme-live"), Some("sk-nope"), Some("  ")];
    let peers = [
        Some("spiffe://corp/ns/acme/sa/app"),
        Some("spiffe://elsewhere/x"),
        Some("not-spiffe"),
    ];
    let t = now();
    let mut skipped = 0;
    for authorization in authorizations {
        for api_key in api_keys {
            assert!(
                authenticator().needs_peer(authorization, api_key),
                "a registry with SPIFFE ids always needs the peer"
            );
            if no_mtls.needs_peer(authorization, api_key) {
                continue;
            }
            skipped += 1;
            let without = no_mtls.authenticate(authorization, api_key, None, t);
            for peer in peers {
                assert_eq!(
                    no_mtls.authenticate(authorization, api_key, peer, t),
                    without,
                    "{authorization:?} {api_key:?} {peer:?}"
                );
            }
        }
    }
    // Only the combinations with no header credential need the peer.
    assert_eq!(skipped, authorizations.len() * api_keys.len() - 2);
}

/// The clock is asked for only where a key expires: with none, every
/// credential gets the same answer at any time; with one, the time decides.
#[test]
fn the_clock_is_needed_only_where_a_key_expires() {
    let k = keys();
    let timeless = one_plain_key();
    assert!(!timeless.needs_clock());
    let token = k.mint(Algorithm::RS256, Some("rsa-1"), &claims("acme"));
    let jwt = bearer(&token);
    for authorization in [
        Some("Bearer sk-acme-live"),
        Some("Bearer sk-nope"),
        Some(jwt.as_str()),
        None,
    ] {
        let at_zero = timeless.authenticate(authorization, None, None, 0);
        for t in [now(), i64::MAX, -1] {
            assert_eq!(
                timeless.authenticate(authorization, None, None, t),
                at_zero,
                "{authorization:?} at {t}"
            );
        }
    }
    // The shared test registry has a key that expired in 2001: the time
    // decides for it, so the clock is needed.
    let a = authenticator();
    assert!(a.needs_clock());
    assert_ne!(
        a.authenticate(Some("Bearer sk-acme-temp"), None, None, 0),
        a.authenticate(Some("Bearer sk-acme-temp"), None, None, now())
    );
}
