//! tenant-auth through a real Envoy: every credential path, every refusal.

use gateway_e2e::{FilterSet, Reply, chat, client, post, registry, start, upstream_request};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use test_keys::{TestKeys, confused_token, now, unsigned_token};

const MODEL: &str = "llama-3.1-8b-instruct";

fn claims(tenant: &str) -> Value {
    json!({ "iss": "https://idp.e2e.test", "aud": "llm-gateway", "tenant": tenant, "sub": "u1", "exp": now() + 600 })
}

/// Sends a chat request with `headers`; returns the reply.
fn call(tb: &testbed::Testbed, headers: &[(&str, &str)]) -> Reply {
    post(
        tb,
        "/v1/chat/completions",
        headers,
        &chat(MODEL, "hello there", 4),
    )
}

fn assert_challenge(reply: &Reply, error: Option<&str>) {
    let challenge = reply
        .header("www-authenticate")
        .expect("www-authenticate header");
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    if let Some(error) = error {
        assert!(
            challenge.contains(&format!("error=\"{error}\"")),
            "{challenge}"
        );
    }
}

#[test]
fn api_keys_through_envoy() {
    let keys = TestKeys::generate();
    let tb = start(registry(&keys), FilterSet::AUTH_ONLY);

    let missing = call(&tb, &[]);
    missing.assert_error(401, "missing_credentials");
    assert_challenge(&missing, None);

    let malformed = call(&tb, &[("authorization", "Basic YWxhZGRpbjpvcGVu")]);
    malformed.assert_error(401, "malformed_authorization");
    assert_challenge(&malformed, Some("invalid_request"));

    let unknown = call(&tb, &[("authorization", "Bearer sk-not-a-key")]);
    unknown.assert_error(401, "invalid_api_key");
    assert_challenge(&unknown, Some("invalid_token"));

    call(&tb, &[("authorization", "Bearer sk-acme-revoked")]).assert_error(401, "revoked_api_key");
    call(&tb, &[("x-api-key", "sk-acme-expired")]).assert_error(401, "expired_api_key");
    let disabled = call(&tb, &[("authorization", "Bearer sk-dormant-live")]);
    disabled.assert_error(403, "tenant_disabled");
    assert_eq!(disabled.body["error"]["type"], "permission_error");

    // Refused requests never reach a pool.
    assert!(
        tb.upstream_requests().is_empty(),
        "refused requests reached upstream"
    );

    // Valid key, both headers; spoofed gateway headers are replaced.
    for headers in [
        vec![("authorization", "Bearer sk-acme-live")],
        vec![("x-api-key", "sk-acme-live")],
    ] {
        let mut h = headers.clone();
        h.extend([
            ("x-tenant-id", "globex"),
            ("x-tenant-tier", "enterprise"),
            ("x-tenant-extra", "spoof"),
            ("x-llm-pool", "latency"),
            ("x-prefix-key", "deadbeef"),
            ("x-request-id", "req-e2e-1"),
        ]);
        let ok = call(&tb, &h);
        assert_eq!(ok.status, 200, "{}", ok.text);
        let seen = upstream_request(&tb, "req-e2e-1").expect("request reached a replica");
        let hdrs = &seen["headers"];
        assert_eq!(hdrs["x-tenant-id"], "acme");
        assert_eq!(hdrs["x-tenant-tier"], "enterprise");
        for gone in [
            "x-tenant-extra",
            "x-llm-pool",
            "x-prefix-key",
            "authorization",
            "x-api-key",
        ] {
            assert!(hdrs.get(gone).is_none(), "{gone} reached upstream: {hdrs}");
        }
        tb.reset_upstreams();
    }

    // A request id that is not sane is replaced by a generated one.
    let ok = call(
        &tb,
        &[
            ("authorization", "Bearer sk-globex-live"),
            ("x-request-id", "bad id with spaces"),
        ],
    );
    assert_eq!(ok.status, 200);
    let seen = tb.upstream_requests();
    let rid = seen[0]["headers"]["x-request-id"]
        .as_str()
        .expect("x-request-id set");
    assert_eq!(rid.len(), 36, "uuid expected, got {rid}");
    assert_eq!(seen[0]["headers"]["x-tenant-id"], "globex");
    // The credential stays at the gateway: neither the key nor which key
    // (that goes to the audit trail as a value) reaches the pool.
    for name in ["authorization", "x-api-key", "x-tenant-credential"] {
        assert!(
            seen[0]["headers"].get(name).is_none(),
            "{name}: {}",
            seen[0]
        );
    }
}

#[test]
fn jwts_through_envoy() {
    let keys = TestKeys::generate();
    let tb = start(registry(&keys), FilterSet::AUTH_ONLY);
    let bearer = |t: &str| format!("Bearer {t}");

    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
        (Algorithm::HS256, "hs-1"),
    ] {
        let token = keys.mint(alg, Some(kid), &claims("globex"));
        let rid = format!("jwt-{kid}");
        let ok = call(
            &tb,
            &[("authorization", &bearer(&token)), ("x-request-id", &rid)],
        );
        assert_eq!(ok.status, 200, "{alg:?}: {}", ok.text);
        let seen = upstream_request(&tb, &rid).expect("reached upstream");
        assert_eq!(seen["headers"]["x-tenant-id"], "globex");
        assert_eq!(seen["headers"]["x-tenant-tier"], "standard");
    }

    let mint = |c: Value| keys.mint(Algorithm::RS256, Some("rsa-1"), &c);
    let with = |k: &str, v: Value| {
        let mut c = claims("globex");
        c[k] = v;
        c
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            mint(with("exp", json!(now() - 120))),
            "expired_token",
        ),
        (
            "not yet valid",
            mint(with("nbf", json!(now() + 600))),
            "invalid_token",
        ),
        (
            "wrong issuer",
            mint(with("iss", json!("https://evil.test"))),
            "invalid_token",
        ),
        (
            "wrong audience",
            mint(with("aud", json!("another-api"))),
            "invalid_token",
        ),
        (
            "alg none",
            unsigned_token(&claims("globex")),
            "invalid_token",
        ),
        (
            "alg confusion",
            confused_token(&keys, Some("rsa-1"), &claims("globex")),
            "invalid_token",
        ),
        (
            "unknown kid",
            keys.mint(Algorithm::RS256, Some("rsa-404"), &claims("globex")),
            "invalid_token",
        ),
        ("unknown tenant", mint(claims("nobody")), "unknown_tenant"),
        (
            "foreign key",
            TestKeys::generate().mint(Algorithm::ES256, Some("ec-1"), &claims("globex")),
            "invalid_token",
        ),
    ];
    for (name, token, code) in &cases {
        let reply = call(&tb, &[("authorization", &bearer(token))]);
        assert_eq!(reply.status, 401, "{name}: {}", reply.text);
        assert_eq!(reply.error_code(), Some(*code), "{name}: {}", reply.text);
        assert_challenge(&reply, Some("invalid_token"));
    }
    // Tampered: another tenant's payload under a valid signature.
    let good = mint(claims("globex"));
    let other = mint(claims("acme"));
    let (g, o): (Vec<&str>, Vec<&str>) = (good.split('.').collect(), other.split('.').collect());
    let tampered = format!("{}.{}.{}", g[0], o[1], g[2]);
    call(&tb, &[("authorization", &bearer(&tampered))]).assert_error(401, "invalid_token");
    call(&tb, &[("authorization", &bearer(&mint(claims("dormant"))))])
        .assert_error(403, "tenant_disabled");

    let upstream = tb.upstream_requests();
    assert_eq!(upstream.len(), 4, "only the four valid tokens reach a pool");
}

#[test]
fn mtls_spiffe_through_envoy() {
    let keys = TestKeys::generate();
    let dir = std::env::temp_dir().join(format!("e2e-mtls-{}", std::process::id()));
    let ca = testbed::tls::TestCa::create(&dir, "e2e client CA").expect("ca");
    let mut config = testbed::TestbedConfig::new(registry(&keys));
    config.filters = FilterSet::AUTH_ONLY;
    config.ratelimit = false;
    config.pools = vec![
        testbed::PoolSpec::new("latency", 1),
        testbed::PoolSpec::new("throughput", 1),
    ];
    config.mtls = Some(ca.listener_files().expect("server cert"));
    let tb = gateway_e2e::start_with(config);
    let url = tb.gateway_mtls_url().expect("mtls listener");

    let ca_cert = reqwest::Certificate::from_pem(&std::fs::read(ca.ca_path()).unwrap()).unwrap();
    let mtls_client = |spiffe: &str, stem: &str| {
        let files = ca.client(stem, spiffe).expect("client cert");
        let mut pem = std::fs::read(&files.cert).unwrap();
        pem.extend(std::fs::read(&files.key).unwrap());
        reqwest::blocking::Client::builder()
            .add_root_certificate(ca_cert.clone())
            .identity(reqwest::Identity::from_pem(&pem).expect("identity"))
            .build()
            .expect("client")
    };
    let send = |c: &reqwest::blocking::Client, rid: &str| {
        Reply::from(
            c.post(format!("{url}/v1/chat/completions"))
                .header("x-request-id", rid)
                .header("x-tenant-id", "initech")
                .json(&chat(MODEL, "hi over mtls", 4))
                .send()
                .expect("mtls request"),
        )
    };

    let ok = send(
        &mtls_client("spiffe://e2e.test/ns/acme/sa/app", "acme"),
        "mtls-1",
    );
    assert_eq!(ok.status, 200, "{}", ok.text);
    let seen = upstream_request(&tb, "mtls-1").expect("reached upstream");
    assert_eq!(seen["headers"]["x-tenant-id"], "acme");
    assert_eq!(seen["headers"]["x-tenant-tier"], "enterprise");

    send(
        &mtls_client("spiffe://e2e.test/ns/stranger/sa/x", "stranger"),
        "mtls-2",
    )
    .assert_error(401, "unknown_client_certificate");
    send(
        &mtls_client("spiffe://e2e.test/ns/dormant/sa/app", "dormant"),
        "mtls-3",
    )
    .assert_error(403, "tenant_disabled");

    // No client certificate: the TLS handshake itself is refused.
    let anonymous = reqwest::blocking::Client::builder()
        .add_root_certificate(ca_cert)
        .build()
        .unwrap();
    assert!(anonymous.get(format!("{url}/v1/models")).send().is_err());
    let _ = client();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn registry_change_reaches_running_envoy() {
    let keys = TestKeys::generate();
    let base = registry(&keys);
    let mut tb = start(base.clone(), FilterSet::AUTH_ONLY);
    call(&tb, &[("authorization", "Bearer sk-globex-rotated")])
        .assert_error(401, "invalid_api_key");
    let live = format!(
        "{{ id = \"live\", sha256 = \"{}\" }}",
        tenant_registry::api_key_digest_hex("sk-globex-live")
    );
    let both = format!(
        "{live}, {{ id = \"rotated\", sha256 = \"{}\" }}",
        tenant_registry::api_key_digest_hex("sk-globex-rotated")
    );
    assert!(base.contains(&live));
    let rotated = base.replacen(&live, &both, 1);
    tb.update_registry(&rotated).expect("hot reload");
    let ok = call(&tb, &[("authorization", "Bearer sk-globex-rotated")]);
    assert_eq!(ok.status, 200, "{}", ok.text);
    // Revoking it the same way takes effect without a restart too.
    let revoked = rotated.replace(
        "id = \"rotated\", sha256",
        "id = \"rotated\", revoked = true, sha256",
    );
    tb.update_registry(&revoked).expect("hot reload");
    call(&tb, &[("authorization", "Bearer sk-globex-rotated")])
        .assert_error(401, "revoked_api_key");
}
