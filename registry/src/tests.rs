use super::*;

const SAMPLE: &str = r#"
[gateway]
cache_profile = "strict"

[tiers.enterprise]
priority = 1
weight = 2.0
limits = { rpm = 600, tpm = 100000, max_concurrency = 8 }

[tiers.free]
pools = ["throughput"]
limits = { rpm = 10 }

[pools.latency]
class = "latency"
[pools.throughput]
class = "throughput"

[models."llama-3.1-8b-instruct"]
groups = ["chat"]
price = { input_per_mtok = 0.2, output_per_mtok = 0.6 }
[models."qwen-7b"]
[models."acme-sql"]
base = "llama-3.1-8b-instruct"
tenant = "acme"

[[tenants]]
id = "acme"
tier = "enterprise"
models = ["group:chat"]
limits = { rpm = 1000 }
spiffe_ids = ["spiffe://corp/ns/acme/sa/app"]
[[tenants.api_keys]]
id = "k1"
sha256 = "DIGEST"

[[tenants]]
id = "hobby"
tier = "free"
models = ["llama-3.1-*", "qwen-*"]
"#;

fn sample() -> Registry {
    let text = SAMPLE.replace("DIGEST", &api_key_digest_hex("sk-test-acme"));
    Registry::from_toml(&text).expect("sample registry loads")
}

#[test]
fn key_lookup_by_digest() {
    let reg = sample();
    let (tenant, key, _) = reg
        .key_by_digest(&api_key_digest("sk-test-acme"))
        .expect("known key");
    assert_eq!(tenant.id, "acme");
    assert_eq!(key.id, "k1");
    assert!(reg.key_by_digest(&api_key_digest("sk-other")).is_none());
}

#[test]
fn spiffe_lookup() {
    let reg = sample();
    assert_eq!(
        reg.tenant_by_spiffe("spiffe://corp/ns/acme/sa/app")
            .map(|t| t.id.as_str()),
        Some("acme")
    );
    assert!(reg.tenant_by_spiffe("spiffe://corp/ns/other").is_none());
}

#[test]
fn limits_override_tier_field_by_field() {
    let reg = sample();
    let acme = reg.tenant("acme").unwrap();
    let l = reg.effective_limits(acme);
    assert_eq!(l.rpm, Some(1000));
    assert_eq!(l.tpm, Some(100000));
    assert_eq!(l.max_concurrency, Some(8));
    assert_eq!(reg.weight(acme), 2.0);
}

#[test]
fn model_access_groups_wildcards_and_adapters() {
    let reg = sample();
    let acme = reg.tenant("acme").unwrap();
    let hobby = reg.tenant("hobby").unwrap();
    assert!(reg.model_allowed(acme, "llama-3.1-8b-instruct"));
    assert!(!reg.model_allowed(acme, "qwen-7b"));
    assert!(reg.model_allowed(acme, "acme-sql"));
    assert!(reg.model_allowed(hobby, "qwen-7b"));
    // Wildcards never reach another tenant's adapter.
    assert!(!reg.model_allowed(hobby, "acme-sql"));
    assert!(!reg.model_allowed(hobby, "not-in-catalog"));
    assert_eq!(
        reg.models_for(hobby),
        vec!["llama-3.1-8b-instruct", "qwen-7b"]
    );
}

#[test]
fn pools_follow_tier() {
    let reg = sample();
    assert_eq!(
        reg.allowed_pools(reg.tenant("hobby").unwrap()),
        vec!["throughput"]
    );
    assert_eq!(
        reg.allowed_pools(reg.tenant("acme").unwrap()),
        vec!["latency", "throughput"]
    );
}

fn load_err(text: &str) -> String {
    Registry::from_toml(text)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn errors_name_the_field() {
    let base = SAMPLE.replace("DIGEST", &api_key_digest_hex("k"));
    assert!(
        load_err(&base.replace("tier = \"free\"", "tier = \"gold\"")).contains("tenants[1].tier")
    );
    assert!(
        load_err(&base.replace(&api_key_digest_hex("k"), "sk-plaintext"))
            .contains("tenants[0].api_keys[0].sha256")
    );
    assert!(
        load_err(&base.replace("limits = { rpm = 10 }", "limits = { rpn = 10 }")).contains("rpn")
    );
    assert!(
        load_err(&base.replace("weight = 2.0", "weight = -1.0"))
            .contains("tiers.enterprise.weight")
    );
    assert!(
        load_err(&base.replace("tenant = \"acme\"", "tenant = \"nobody\""))
            .contains("models.acme-sql.tenant")
    );
    assert!(
        load_err(&base.replace("id = \"hobby\"", "id = \"acme\"")).contains("duplicate tenant id")
    );
    assert!(load_err(&base.replace("spiffe://corp", "https://corp")).contains("spiffe_ids[0]"));
    // Ids name audit partitions (directories): the parent must not be one.
    for id in [".", ".."] {
        let text = base.replace("id = \"hobby\"", &format!("id = \"{id}\""));
        assert!(load_err(&text).contains("tenants[1].id"), "{id}");
    }
    let audit = "models = [\"llama-3.1-*\", \"qwen-*\"]\naudit = { log_prompts = true, max_prompt_bytes = 0 }";
    assert!(
        load_err(&base.replace("models = [\"llama-3.1-*\", \"qwen-*\"]", audit))
            .contains("tenants[1].audit.max_prompt_bytes")
    );
    let huge = "models = [\"llama-3.1-*\", \"qwen-*\"]\naudit = { log_prompts = true, max_prompt_bytes = 65537 }";
    assert!(
        load_err(&base.replace("models = [\"llama-3.1-*\", \"qwen-*\"]", huge))
            .contains("tenants[1].audit.max_prompt_bytes")
    );
    let unknown_kind = "models = [\"llama-3.1-*\", \"qwen-*\"]\naudit = { redact = [\"ssn\"] }";
    assert!(
        load_err(&base.replace("models = [\"llama-3.1-*\", \"qwen-*\"]", unknown_kind))
            .contains("ssn")
    );
}

#[test]
fn audit_policy_defaults_to_hashes_only_with_every_redaction() {
    let reg = sample();
    let audit = &reg.tenant("hobby").unwrap().audit();
    assert_eq!(audit.retention_days, 30);
    assert!(!audit.log_prompts && !audit.encrypt);
    assert_eq!(audit.redact, PiiKind::ALL.to_vec());
}

#[test]
fn json_round_trip_matches_toml() {
    let reg = sample();
    let json = serde_json::to_string(reg.config()).unwrap();
    let again = Registry::from_json(&json).unwrap();
    assert_eq!(again.config(), reg.config());
}

#[test]
fn expired_key_carries_expiry() {
    let text = SAMPLE.replace("DIGEST", &api_key_digest_hex("x")).replace(
        "id = \"k1\"",
        "id = \"k1\"\nexpires_at = \"2020-01-01T00:00:00Z\"",
    );
    let reg = Registry::from_toml(&text).unwrap();
    let (_, _, r) = reg.key_by_digest(&api_key_digest("x")).unwrap();
    assert_eq!(r.expires_at, Some(1577836800));
}

#[test]
fn demo_registry_loads() {
    let text = include_str!("../../testbed/demo-registry.toml");
    let reg = Registry::from_toml(text).expect("demo registry is valid");
    assert_eq!(reg.tenants().len(), 3);
}

fn with_limits(tier: &str, tenant: &str) -> Result<Registry, RegistryError> {
    Registry::from_toml(&format!(
        "[tiers.t]\nlimits = {tier}\n[[tenants]]\nid = \"a\"\ntier = \"t\"\nlimits = {tenant}\n"
    ))
}

#[test]
fn windows_are_limits_declared_as_data() {
    let reg = with_limits(
        r#"{ rpm = 60, windows = [{ requests = 1000, per = "day" }, { tokens = 5000000, per = "calendar_month" }] }"#,
        r#"{ windows = [{ requests = 50, per = "minute" }, { usd = 1.5, per = "hour" }] }"#,
    )
    .unwrap();
    let l = reg.effective_limits(reg.tenant("a").unwrap());
    let all = l.by_window();
    // The tenant's minute window overrides the tier's `rpm` shorthand; the
    // tier's other windows are inherited.
    assert_eq!(all.get(&(Unit::Requests, Per::Minute)), Some(&50.0));
    assert_eq!(all.get(&(Unit::Requests, Per::Day)), Some(&1000.0));
    assert_eq!(
        all.get(&(Unit::Tokens, Per::CalendarMonth)),
        Some(&5_000_000.0)
    );
    assert_eq!(all.get(&(Unit::Usd, Per::Hour)), Some(&1.5));
    assert_eq!(all.len(), 4);
    // And the other way round: a tenant's shorthand beats a tier's window.
    let reg = with_limits(
        r#"{ windows = [{ requests = 1000, per = "minute" }] }"#,
        "{ rpm = 7 }",
    )
    .unwrap();
    let l = reg.effective_limits(reg.tenant("a").unwrap());
    assert_eq!(l.limit(Unit::Requests, Per::Minute), Some(7.0));
}

#[test]
fn a_bad_window_names_its_field() {
    let field = |tenant: &str| match with_limits("{}", tenant) {
        Err(RegistryError::Invalid { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    };
    let cases = [
        (r#"{ windows = [{ per = "day" }] }"#, "windows[0]"),
        (
            r#"{ windows = [{ requests = 1, tokens = 2, per = "day" }] }"#,
            "windows[0]",
        ),
        (r#"{ windows = [{ requests = 1 }] }"#, "windows[0].per"),
        (
            r#"{ windows = [{ usd = -1.0, per = "day" }] }"#,
            "windows[0].usd",
        ),
        // `rpm` is the minute window: declaring it again is ambiguous.
        (
            r#"{ rpm = 5, windows = [{ requests = 9, per = "minute" }] }"#,
            "windows[0]",
        ),
        (
            r#"{ windows = [{ tokens = 9, per = "hour" }, { tokens = 8, per = "hour" }] }"#,
            "windows[1]",
        ),
    ];
    for (limits, at) in cases {
        assert_eq!(field(limits), format!("tenants[0].limits.{at}"), "{limits}");
    }
    assert!(matches!(
        with_limits("{}", r#"{ windows = [{ tokens = 9, per = "fortnight" }] }"#),
        Err(RegistryError::Parse(_))
    ));
}
