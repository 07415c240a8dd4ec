//! Admin HTTP: auth, usage, metrics, live throttle, reload keeping counters.

mod common;

use std::time::Duration;

use admission_proto::v1::RejectReason;
use common::*;
use test_support::poll::eventually_async as eventually;

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
        ("GET", "/admin/usage/export"),
        ("GET", "/admin/usage/invoice?tenant=a&month=2026-01"),
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

/// One export page: the body and the `x-next-cursor` it ends at.
async fn export_page(addr: std::net::SocketAddr, query: &str) -> (u16, String, Option<String>) {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/admin/usage/export?{query}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let next = r
        .headers()
        .get("x-next-cursor")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.text().await.unwrap(), next)
}

/// A billing job pages through the export with a small page size while
/// charges keep landing; it ends with every lease of the ledger exactly
/// once, and the CSV, CloudEvents and invoice forms agree with it.
#[tokio::test]
async fn usage_export_resumes_exactly_while_charges_land() {
    let h = start(&[], unlimited()).await;
    let addr = h.service.admin_addr;
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let grpc = h.service.grpc_addr;
            tokio::spawn(async move {
                let mut c = client(grpc).await;
                for i in 0..15u32 {
                    let model = if w == 0 && i < 3 { "m" } else { "other" };
                    let r = admit(&mut c, "b", model, 100, 100).await;
                    assert!(admitted(&r), "{r:?}");
                    complete(&mut c, &r.lease_id, 100 + i, 50, i % 4).await;
                }
            })
        })
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut done = false;
    loop {
        let q = cursor
            .as_ref()
            .map_or("limit=7".to_owned(), |c| format!("limit=7&cursor={c}"));
        let (status, body, next) = export_page(addr, &q).await;
        assert_eq!(status, 200, "{body}");
        let mut lines = 0;
        for line in body.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            seen.push(v["lease"].as_str().unwrap().to_owned());
            // Each line names the cursor just past it: the last one is the page's.
            cursor = Some(v["cursor"].as_str().unwrap().to_owned());
            lines += 1;
        }
        assert!(lines <= 7);
        if next.is_some() {
            assert!(
                lines < 7 || cursor == next,
                "a full page ends at its last record"
            );
            cursor = next;
        }
        if done && lines == 0 {
            break;
        }
        done = writers.iter().all(|w| w.is_finished());
        if lines == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let ledger = ledger_text(&h.data_dir());
    let mut in_ledger: Vec<String> = ledger
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["lease"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(in_ledger.len(), 45);
    let mut exported = seen.clone();
    exported.sort();
    exported.dedup();
    assert_eq!(exported.len(), seen.len(), "a record exported twice");
    in_ledger.sort();
    assert_eq!(exported, in_ledger);

    // Filters, CSV and CloudEvents over the same ledger.
    let (_, csv, _) = export_page(addr, "format=csv&model=m").await;
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| &r[4] == "m" && &r[3] == "b"));
    let (_, events, _) = export_page(addr, "format=cloudevents&limit=100").await;
    let events: Vec<serde_json::Value> = serde_json::from_str(&events).unwrap();
    assert_eq!(events.len(), 45);
    for e in &events {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "io.llm-gateway.usage.v1");
        assert_eq!(e["subject"], "b");
        assert_eq!(e["id"], e["data"]["cursor"]);
        assert!(
            e["source"]
                .as_str()
                .unwrap()
                .starts_with("//ratelimit-service/")
        );
    }

    // The invoice is the ledger summed, to the nano-dollar.
    let month = &events[0]["time"].as_str().unwrap()[..7];
    let invoice: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{addr}/admin/usage/invoice?tenant=b&month={month}"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ledger_nanos: u64 = ledger
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["usd_nanos"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(
        invoice["total"]["usd_nanos"].as_u64().unwrap(),
        ledger_nanos
    );
    assert_eq!(invoice["total"]["requests"], 45);
    assert_eq!(invoice["models"].as_array().unwrap().len(), 2);
    // 3 on m: (100+101+102) prompt at $1000/M and 150 output at $2000/M, with
    // cached tokens 0,1,2 at $100/M instead.
    let m = &invoice["models"][0];
    assert_eq!(m["model"], "m");
    assert_eq!(m["cached_tokens"], 3);
    let by_day: u64 = invoice["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["usd_nanos"].as_u64().unwrap())
        .sum();
    assert_eq!(by_day, ledger_nanos, "the days sum to the month");
    let csv = reqwest::Client::new()
        .get(format!(
            "http://{addr}/admin/usage/invoice?tenant=b&month={month}&format=csv&by=day"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    let (total, days) = rows.split_last().unwrap();
    assert_eq!(&total[3], "TOTAL");
    assert!(days.iter().all(|r| r[2].len() == 10), "{csv}");
    let sum: u64 = days.iter().map(|r| r[8].parse::<u64>().unwrap()).sum();
    assert_eq!(sum.to_string(), total[8].to_string(), "{csv}");

    let day = events[0]["id"].as_str().unwrap().split(':').next().unwrap();
    let mid_record = format!("cursor={day}:3");
    for (query, needle) in [
        ("cursor=yesterday", "cursor"),
        (mid_record.as_str(), "record boundary"),
        ("limit=0", "limit"),
        ("from=soon", "from"),
        ("format=xml", "format"),
        ("tenant=b&bogus=1", "bogus"),
    ] {
        let (status, body, _) = export_page(addr, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(needle), "{query}: {body}");
    }
}
