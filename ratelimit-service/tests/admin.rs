//! Admin HTTP: auth, usage, metrics, live throttle, reload keeping counters.

mod common;

use std::time::Duration;

use admission_proto::v1::RejectReason;
use common::*;

fn reason(r: &admission_proto::v1::AdmitResponse) -> RejectReason {
    RejectReason::try_from(r.reason).unwrap()
}

#[tokio::test]
async fn everything_but_healthz_needs_the_token() {
    let h = start(&[], unlimited()).await;
    let addr = h.service.admin_addr;
    assert_eq!(http_async(addr, "GET", "/healthz", None, None).await.0, 200);
    for (method, path) in [
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/admin/usage"),
        ("POST", "/admin/reload"),
        ("POST", "/admin/tenants/a/throttle"),
    ] {
        assert_eq!(
            http_async(addr, method, path, None, Some("{}")).await.0,
            401,
            "{path}"
        );
        assert_eq!(
            http_async(addr, method, path, Some("wrong"), Some("{}"))
                .await
                .0,
            401,
            "{path}"
        );
    }
    assert_eq!(
        http_async(addr, "GET", "/readyz", Some(ADMIN_TOKEN), None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn usage_and_metrics_report_per_tenant() {
    let h = start(&[], unlimited()).await;
    let mut c = h.client().await;
    let r = admit(&mut c, "a", "m", 100, 100).await;
    complete(&mut c, &r.lease_id, 100, 50, 0).await;
    let held = admit(&mut c, "a", "m", 1, 1).await;
    assert!(admitted(&held));
    assert_eq!(
        reason(&admit(&mut c, "a", "m", 900, 200).await),
        RejectReason::RequestTooLarge
    );

    let (status, body) = http_async(
        h.service.admin_addr,
        "GET",
        "/admin/usage",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let usage: serde_json::Value = serde_json::from_str(&body).unwrap();
    let a = usage["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "a")
        .unwrap();
    assert_eq!(a["requests"], 2);
    assert_eq!(a["rejected"], 1);
    assert_eq!(a["tokens_in"], 100);
    assert_eq!(a["tokens_out"], 50);
    assert_eq!(a["in_flight"], 1);
    // $0.1 + $0.1 = $0.2 today.
    assert!((a["spend_today_usd"].as_f64().unwrap() - 0.2).abs() < 1e-9);
    assert!((a["spend_month_usd"].as_f64().unwrap() - 0.2).abs() < 1e-9);

    let (status, text) = http_async(
        h.service.admin_addr,
        "GET",
        "/metrics",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    for needle in [
        r#"ratelimit_admitted_total{tenant="a"} 2"#,
        r#"ratelimit_rejected_total{tenant="a",reason="request_too_large"} 1"#,
        r#"ratelimit_tokens_total{tenant="a",direction="in"} 100"#,
        r#"ratelimit_leases_active{tenant="a"} 1"#,
        r#"ratelimit_budget_used_ratio{tenant="a",period="day"} 0.2"#,
        r#"ratelimit_spend_usd_total{tenant="a"} 0.2"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn throttle_scales_a_tenant_live() {
    let h = start(&[], unlimited()).await;
    let addr = h.service.admin_addr;
    let mut c = h.client().await;
    let throttle = |fraction: &str| {
        let body = format!(r#"{{"fraction":{fraction}}}"#);
        async move {
            http_async(
                addr,
                "POST",
                "/admin/tenants/a/throttle",
                Some(ADMIN_TOKEN),
                Some(&body),
            )
            .await
        }
    };
    assert_eq!(throttle("0.4").await.0, 200);
    // rpm 5 * 0.4 = 2.
    for _ in 0..2 {
        let r = admit(&mut c, "a", "other", 1, 1).await;
        assert!(admitted(&r));
        complete(&mut c, &r.lease_id, 1, 1, 0).await;
    }
    let r = admit(&mut c, "a", "other", 1, 1).await;
    assert_eq!(reason(&r), RejectReason::RequestsPerMinute);
    assert_eq!(r.rate_limit.unwrap().limit_requests, Some(2));
    assert_eq!(throttle("1.5").await.0, 400);
    assert_eq!(
        http_async(
            addr,
            "POST",
            "/admin/tenants/nobody/throttle",
            Some(ADMIN_TOKEN),
            Some(r#"{"fraction":0.5}"#)
        )
        .await
        .0,
        404
    );
    // 1 clears: back to 5 with 2 used.
    assert_eq!(throttle("1").await.0, 200);
    for _ in 0..3 {
        let r = admit(&mut c, "a", "other", 1, 1).await;
        assert!(admitted(&r), "{r:?}");
        complete(&mut c, &r.lease_id, 1, 1, 0).await;
    }
    assert_eq!(
        reason(&admit(&mut c, "a", "other", 1, 1).await),
        RejectReason::RequestsPerMinute
    );
}

#[tokio::test]
async fn reload_keeps_counters_leases_and_spend() {
    let h = start(&[], unlimited()).await;
    let addr = h.service.admin_addr;
    let mut c = h.client().await;
    for _ in 0..3 {
        let r = admit(&mut c, "a", "m", 10, 10).await;
        complete(&mut c, &r.lease_id, 10, 10, 0).await;
    }
    let held = admit(&mut c, "a", "m", 10, 10).await;
    assert!(admitted(&held));

    // Raise tier t's rpm from 5 to 7 and add tenant c.
    let raised =
        REGISTRY.replace("rpm = 5,", "rpm = 7,") + "\n[[tenants]]\nid = \"c\"\ntier = \"big\"\n";
    std::fs::write(h.registry_path(), &raised).unwrap();
    let (status, body) = http_async(addr, "POST", "/admin/reload", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(admitted(&admit(&mut c, "c", "m", 1, 1).await));
    // 4 used of the new 7: 3 more, then RPM (a reset counter would allow 7).
    complete(&mut c, &held.lease_id, 10, 10, 0).await;
    for _ in 0..3 {
        let r = admit(&mut c, "a", "m", 10, 10).await;
        assert!(admitted(&r), "{r:?}");
        complete(&mut c, &r.lease_id, 10, 10, 0).await;
    }
    let r = admit(&mut c, "a", "m", 10, 10).await;
    assert_eq!(reason(&r), RejectReason::RequestsPerMinute);
    // Spend survived: 7 requests x (10 x 0.001 + 10 x 0.002).
    let usage = h.service.limiter().usage().await.unwrap();
    let a = usage.iter().find(|u| u.tenant == "a").unwrap();
    assert!(
        (a.spend_today_usd - 0.21).abs() < 1e-9,
        "{}",
        a.spend_today_usd
    );

    // A broken file is refused and the old registry stays.
    std::fs::write(h.registry_path(), "[[tenants]]\nid = 1\n").unwrap();
    let (status, body) = http_async(addr, "POST", "/admin/reload", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 422);
    assert!(body.contains("error"), "{body}");
    assert!(admitted(&admit(&mut c, "c", "m", 1, 1).await));
}

#[tokio::test]
async fn registry_file_changes_are_picked_up() {
    let h = start(&[], unlimited()).await;
    let mut c = h.client().await;
    assert_eq!(
        reason(&admit(&mut c, "c", "m", 1, 1).await),
        RejectReason::UnknownTenant
    );
    let added = format!("{REGISTRY}\n[[tenants]]\nid = \"c\"\ntier = \"big\"\n");
    std::fs::write(h.registry_path(), added).unwrap();
    let picked_up = eventually(Duration::from_secs(4), || {
        let mut c = c.clone();
        async move { admitted(&admit(&mut c, "c", "m", 1, 1).await) }
    })
    .await;
    assert!(picked_up, "registry change not reloaded");
}
