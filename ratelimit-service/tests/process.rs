//! The binary as operators run it: LISTENING line, SIGKILL + restart with
//! no lost spend, SIGHUP reload, clean SIGTERM exit.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use admission_proto::v1::RejectReason;
use common::*;
use test_support::poll::eventually_async as eventually;

struct Proc {
    child: Child,
    grpc: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ratelimit-service"))
        .arg("--registry")
        .arg(dir.join("registry.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--fsync", "always"])
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = |key: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
            .parse()
            .unwrap()
    };
    assert!(line.starts_with("LISTENING "), "{line:?}");
    Proc {
        grpc: addr("grpc="),
        admin: addr("admin="),
        child,
    }
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

async fn spend_today(admin: SocketAddr, tenant: &str) -> f64 {
    let (status, body) = http_async(admin, "GET", "/admin/usage", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == tenant)
        .unwrap()["spend_today_usd"]
        .as_f64()
        .unwrap()
}

#[tokio::test]
async fn sigkill_and_restart_lose_no_recorded_spend() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("registry.toml"), REGISTRY).unwrap();
    let p = spawn(dir.path());
    let mut c = client(p.grpc).await;
    for _ in 0..2 {
        let r = admit(&mut c, "a", "m", 100, 100).await;
        assert!(admitted(&r));
        complete(&mut c, &r.lease_id, 100, 100, 0).await;
    }
    // In flight at the kill: lost, not charged.
    assert!(admitted(&admit(&mut c, "a", "m", 100, 100).await));
    assert!((spend_today(p.admin, "a").await - 0.6).abs() < 1e-9);
    drop(c);
    drop(p); // SIGKILL

    let p = spawn(dir.path());
    assert!((spend_today(p.admin, "a").await - 0.6).abs() < 1e-9);
    let mut c = client(p.grpc).await;
    // $0.6 spent of $1: one more $0.3 request fits, the next does not.
    let r = admit(&mut c, "a", "m", 100, 100).await;
    assert!(admitted(&r));
    complete(&mut c, &r.lease_id, 100, 100, 0).await;
    let r = admit(&mut c, "a", "m", 100, 100).await;
    assert_eq!(
        RejectReason::try_from(r.reason).unwrap(),
        RejectReason::BudgetExhausted
    );

    signal(&p, "-TERM");
    let mut p = p;
    let status = tokio::task::spawn_blocking(move || {
        let s = p.child.wait();
        (s, p)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    assert!(status.success(), "SIGTERM exit: {status:?}");
}

#[tokio::test]
async fn sighup_reloads_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.toml");
    std::fs::write(&path, REGISTRY).unwrap();
    let p = spawn(dir.path());
    let mut c = client(p.grpc).await;
    assert_eq!(
        RejectReason::try_from(admit(&mut c, "a", "other", 990, 20).await.reason).unwrap(),
        RejectReason::RequestTooLarge
    );
    // Same length and restored mtime: only SIGHUP can reveal the change.
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let changed = REGISTRY.replace("tpm = 1000,", "tpm = 9000,");
    assert_eq!(changed.len(), REGISTRY.len());
    std::fs::write(&path, changed).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(before)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        RejectReason::try_from(admit(&mut c, "a", "other", 990, 20).await.reason).unwrap(),
        RejectReason::RequestTooLarge,
        "reloaded without a signal"
    );
    signal(&p, "-HUP");
    let reloaded = eventually(Duration::from_secs(3), || {
        let mut c = c.clone();
        async move { admitted(&admit(&mut c, "a", "other", 990, 20).await) }
    })
    .await;
    assert!(reloaded, "SIGHUP did not reload");
}
