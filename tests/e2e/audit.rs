//! The audit trail through the real chain: a regulated tenant's requests
//! (answered, streamed, refused) each leave one record with the digests the
//! client can compute itself, its logged prompt is redacted, its partition
//! is sealed on disk, and the admin endpoint hands out one tenant's records
//! only. Retention deletes old day files when the service starts.

use std::path::PathBuf;
use std::time::Duration;

use gateway_e2e::{
    client, eventually, full_chain, metric, post, ratelimit_metrics, start_with, with_digests,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testbed::Testbed;

const MODEL: &str = "llama-3.1-8b-instruct";

/// A regulated tenant that logs (redacted) prompts, sealed at rest, and a
/// plain one that keeps hashes only.
const AUDIT_TENANTS: &str = r#"
[[tenants]]
id = "audit-t"
tier = "metered"
models = ["group:chat"]
limits = { rpm = 3, tpm = 1000000 }
api_keys = [{ id = "compliance-key", sha256 = "{{digest:sk-audit-t}}" }]
audit = { encrypt = true, log_prompts = true, retention_days = 90, redact_patterns = ["ACME-[0-9]{6}"] }

[[tenants]]
id = "plain-t"
tier = "metered"
models = ["group:chat"]
api_keys = [{ id = "k", sha256 = "{{digest:sk-plain-t}}" }]
"#;

const PII: &str = "Mail jane.doe@example.com or call +1 415 555 0134 about \
                   card 4111 1111 1111 1111 and ticket ACME-123456.";

/// The master key file, removed with the test.
struct KeyFile(PathBuf);

impl KeyFile {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("audit-key-{}.hex", std::process::id()));
        std::fs::write(&path, "5a".repeat(32)).expect("key file");
        Self(path)
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sends `body` as `tenant` with request id `rid`; the digests of the bytes
/// sent and received, as the client computes them, and the reply.
fn send(
    tb: &Testbed,
    tenant: &str,
    rid: &str,
    body: &Value,
) -> (String, String, gateway_e2e::Reply) {
    let sent = serde_json::to_vec(body).expect("body");
    let reply = post(
        tb,
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer sk-{tenant}")),
            ("x-request-id", rid),
        ],
        body,
    );
    (sha256_hex(&sent), sha256_hex(reply.text.as_bytes()), reply)
}

fn audit_page(tb: &Testbed, query: &str) -> (u16, Vec<Value>, String) {
    let url = format!(
        "{}/admin/audit?{query}",
        tb.ratelimit_admin_url().expect("ratelimit-service")
    );
    let resp = client()
        .get(url)
        .bearer_auth(&tb.config.admin_token)
        .send()
        .expect("admin audit");
    let status = resp.status().as_u16();
    let unreadable = resp
        .headers()
        .get("x-audit-unreadable")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = resp.text().unwrap_or_default();
    let records = if status == 200 {
        text.lines()
            .map(|l| serde_json::from_str(l).expect("audit line"))
            .collect()
    } else {
        Vec::new()
    };
    (status, records, unreadable)
}

fn records_of(tb: &Testbed, tenant: &str, want: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let complete = eventually(Duration::from_secs(15), || {
        last = audit_page(tb, &format!("tenant={tenant}")).1;
        last.len() >= want
    });
    assert!(
        complete,
        "{tenant}: {} of {want} audit records: {last:?}",
        last.len()
    );
    last
}

fn by_id<'a>(records: &'a [Value], rid: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["request_id"] == rid)
        .unwrap_or_else(|| panic!("no record of {rid}: {records:?}"))
}

fn partition_text(tb: &Testbed, tenant: &str) -> String {
    let dir = tb.ratelimit_data_dir().join("audit").join(tenant);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("audit file"))
        .collect()
}

#[test]
fn a_regulated_tenants_requests_leave_a_sealed_redacted_trail_only_it_can_read() {
    let key = KeyFile::new();
    let registry = with_digests(&format!(
        "{}{AUDIT_TENANTS}",
        include_str!("fixtures/admission-registry.toml")
    ));
    let mut config = full_chain(
        registry,
        &["--decode-base-us", "2000", "--decode-us-per-seq", "0"],
    );
    config.ratelimit_args = vec![
        "--audit-key-file".into(),
        key.0.to_str().expect("utf-8 path").into(),
    ];
    let mut tb = start_with(config);

    let plain = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": PII}],
        "max_tokens": 5,
    });
    let (req_a, resp_a, reply_a) = send(&tb, "audit-t", "audit-answer-1", &plain);
    assert_eq!(reply_a.status, 200, "{}", reply_a.text);
    let mut streamed = plain.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({ "include_usage": true });
    let (req_s, resp_s, reply_s) = send(&tb, "audit-t", "audit-stream-1", &streamed);
    assert_eq!(reply_s.status, 200, "{}", reply_s.text);
    let (_, _, third) = send(&tb, "audit-t", "audit-answer-2", &plain);
    assert_eq!(third.status, 200, "{}", third.text);
    // rpm = 3: the fourth is refused, and the refusal is a record too.
    let (req_r, _, refused) = send(&tb, "audit-t", "audit-refused-1", &plain);
    refused.assert_error(429, "rate_limit_exceeded");
    let (plain_req, plain_resp, other) = send(&tb, "plain-t", "plain-answer-1", &plain);
    assert_eq!(other.status, 200, "{}", other.text);

    let records = records_of(&tb, "audit-t", 4);
    assert_eq!(records.len(), 4, "one record per request: {records:?}");
    for r in &records {
        assert_eq!(r["tenant"], "audit-t", "{r}");
        assert_eq!(r["credential"], "api_key:compliance-key", "{r}");
    }

    // The credential and the digest reach the trail as values: nothing the
    // gateway derives for its own records is sent to the pool.
    for r in tb.upstream_requests() {
        for name in ["x-tenant-credential", "x-llm-request-sha256"] {
            assert!(r["headers"].get(name).is_none(), "{name}: {r}");
        }
    }

    // The answered request: what the client can check on its own side.
    let a = by_id(&records, "audit-answer-1");
    assert_eq!(a["request_sha256"], req_a.as_str(), "{a}");
    assert_eq!(a["response_sha256"], resp_a.as_str(), "{a}");
    assert_eq!(
        (a["http_status"].as_u64(), a["outcome"].as_str()),
        (Some(200), Some("completed"))
    );
    let usage = &reply_a.body["usage"];
    assert_eq!(a["prompt_tokens"], usage["prompt_tokens"], "{a}");
    assert_eq!(a["completion_tokens"], usage["completion_tokens"], "{a}");
    let replicas: Vec<String> = ["latency", "throughput"]
        .iter()
        .flat_map(|p| tb.replica_urls(p))
        .collect();
    let replica = a["replica"].as_str().unwrap_or_default();
    assert!(
        !replica.is_empty() && replicas.iter().any(|u| u.ends_with(replica)),
        "replica {replica:?} not one of {replicas:?}"
    );
    assert!(a["ttft_ms"].as_u64() <= a["duration_ms"].as_u64(), "{a}");
    assert!(a["duration_ms"].as_u64() > Some(0), "{a}");
    assert!(a["usd"].as_str().is_some_and(|u| u != "0"), "{a}");

    // The logged prompt: the request as the pool got it, scrubbed.
    let prompt = a["prompt"].as_str().expect("prompt logged");
    for kind in ["email", "phone", "card", "custom"] {
        assert!(
            prompt.contains(&format!("[REDACTED:{kind}]")),
            "{kind}: {prompt}"
        );
    }
    for leaked in ["jane.doe", "555 0134", "4111", "ACME-123456", "cache_salt"] {
        assert!(!prompt.contains(leaked), "{leaked} in {prompt}");
    }

    // The stream asked for its usage chunk, so the client got every byte
    // the pool sent, and both sides hash the same.
    let s = by_id(&records, "audit-stream-1");
    assert_eq!(s["request_sha256"], req_s.as_str(), "{s}");
    assert_eq!(s["response_sha256"], resp_s.as_str(), "{s}");
    assert_ne!(s["response_sha256"], a["response_sha256"]);

    let r = by_id(&records, "audit-refused-1");
    assert_eq!(
        (
            r["outcome"].as_str(),
            r["reason"].as_str(),
            r["http_status"].as_u64()
        ),
        (Some("rejected"), Some("requests_per_minute"), Some(429)),
        "{r}"
    );
    // A small body comes with its headers: the request is admitted (here
    // refused) in one call once the body is in, so the record names the
    // model and the digest of the body sent.
    assert_eq!(
        (r["model"].as_str(), r["request_sha256"].as_str()),
        (Some(MODEL), Some(req_r.as_str())),
        "{r}"
    );
    for rid in ["audit-answer-1", "audit-stream-1", "audit-answer-2"] {
        assert_eq!(by_id(&records, rid)["model"], MODEL);
    }

    // One tenant per read: the other's request is not in this page, and
    // the plain tenant's record keeps hashes only.
    assert!(records.iter().all(|r| r["request_id"] != "plain-answer-1"));
    let plain_records = records_of(&tb, "plain-t", 1);
    assert_eq!(plain_records.len(), 1, "{plain_records:?}");
    let p = &plain_records[0];
    assert_eq!(
        (p["request_sha256"].as_str(), p["response_sha256"].as_str()),
        (Some(plain_req.as_str()), Some(plain_resp.as_str()))
    );
    assert!(p.get("prompt").is_none(), "no prompt logging: {p}");
    for hostile in [
        "tenant=..%2Faudit-t",
        "tenant=nobody",
        "tenant=audit-t%2F..%2Fplain-t",
    ] {
        assert_eq!(audit_page(&tb, hostile).0, 404, "{hostile}");
    }
    assert_eq!(audit_page(&tb, "tenant=audit-t&limit=0").0, 400);

    // On disk: the regulated partition is ciphertext, the plain one is not.
    let sealed = partition_text(&tb, "audit-t");
    for visible in ["audit-answer-1", "compliance-key", "REDACTED", MODEL] {
        assert!(!sealed.contains(visible), "{visible} readable on disk");
    }
    assert!(partition_text(&tb, "plain-t").contains("plain-answer-1"));
    let exposition = ratelimit_metrics(&tb);
    assert!(
        metric(
            &exposition,
            "ratelimit_audit_redactions_total",
            &[("kind", "email")]
        )
        .is_some_and(|n| n >= 1.0),
        "redactions not counted"
    );

    // Retention and restart: a day file older than the tenant's 90 days goes
    // when the service starts; the trail it wrote still opens.
    let stale = tb
        .ratelimit_data_dir()
        .join("audit/audit-t/audit-2020-01-01.jsonl");
    std::fs::write(&stale, "{}\n").expect("stale file");
    tb.restart_ratelimit().expect("restart ratelimit-service");
    assert!(
        eventually(Duration::from_secs(10), || !stale.exists()),
        "a file past retention survived the sweep"
    );
    let (status, again, unreadable) = audit_page(&tb, "tenant=audit-t");
    assert_eq!((status, again.len(), unreadable.as_str()), (200, 4, "0"));
}
