use super::*;
use tenant_registry::api_key_digest;

const REGISTRY: &str = r#"# operators' comment survives
[tiers.std]

[[tenants]]
id = "acme"   # inline comment survives too
tier = "std"

[[tenants]]
id = "globex"
tier = "std"
api_keys = [{ id = "old", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }]
"#;

#[test]
fn mint_adds_digest_only_and_keeps_comments() {
    let (text, key) = mint_key(REGISTRY, "acme", None, None).unwrap();
    assert!(key.plaintext.starts_with("sk-") && key.plaintext.len() == 51);
    assert!(
        !text.contains(&key.plaintext),
        "plaintext must never be written"
    );
    assert!(text.contains("# operators' comment survives"));
    assert!(text.contains("# inline comment survives too"));
    let reg = Registry::from_toml(&text).unwrap();
    let (tenant, stored, _) = reg.key_by_digest(&api_key_digest(&key.plaintext)).unwrap();
    assert_eq!((tenant.id.as_str(), stored.id.as_str()), ("acme", "key-1"));
}

#[test]
fn mint_into_inline_array_and_refuse_duplicates() {
    let (text, key) = mint_key(
        REGISTRY,
        "globex",
        Some("new"),
        Some("2030-01-01T00:00:00Z"),
    )
    .unwrap();
    let reg = Registry::from_toml(&text).unwrap();
    let (_, stored, r) = reg.key_by_digest(&api_key_digest(&key.plaintext)).unwrap();
    assert_eq!(stored.id, "new");
    assert_eq!(r.expires_at, Some(1893456000));
    assert!(matches!(
        mint_key(&text, "globex", Some("new"), None),
        Err(CtlError::DuplicateKey { .. })
    ));
    assert!(matches!(
        mint_key(REGISTRY, "nobody", None, None),
        Err(CtlError::UnknownTenant(_))
    ));
    assert!(matches!(
        mint_key(REGISTRY, "acme", None, Some("tomorrow")),
        Err(CtlError::Registry(_))
    ));
}

#[test]
fn revoke_marks_key() {
    let (text, key) = mint_key(REGISTRY, "acme", Some("k"), None).unwrap();
    let text = revoke_key(&text, "acme", "k").unwrap();
    let reg = Registry::from_toml(&text).unwrap();
    assert!(
        reg.key_by_digest(&api_key_digest(&key.plaintext))
            .unwrap()
            .1
            .revoked
    );
    let text = revoke_key(&text, "globex", "old").unwrap();
    assert!(text.contains("revoked = true"));
    assert!(matches!(
        revoke_key(&text, "acme", "nope"),
        Err(CtlError::UnknownKey { .. })
    ));
}
