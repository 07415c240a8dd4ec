//! Two service replicas on one Redis enforce one set of limits.

mod common;

use admission_proto::v1::RejectReason;
use common::*;
use test_support::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_limit() {
    let redis = RedisServer::start();
    let h = start(&["--redis", &redis.url], unlimited()).await;
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("registry.toml"), REGISTRY).unwrap();
    let second = start_in(other.path(), &["--redis", &redis.url], unlimited()).await;
    let mut one = h.client().await;
    let mut two = client(second.grpc_addr).await;

    // Concurrency 2 across both replicas; a lease admitted on one replica
    // completes on the other.
    let x = admit(&mut one, "a", "m", 10, 10).await;
    let y = admit(&mut two, "a", "m", 10, 10).await;
    assert!(admitted(&x) && admitted(&y));
    let z = admit(&mut one, "a", "m", 10, 10).await;
    assert_eq!(
        RejectReason::try_from(z.reason).unwrap(),
        RejectReason::Concurrency
    );
    complete(&mut two, &x.lease_id, 10, 10, 0).await;
    complete(&mut one, &y.lease_id, 10, 10, 0).await;

    // Tenant b may call model m 3 times a minute: racing 12 calls through
    // both replicas, exactly 3 pass.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let mut c = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.push(tokio::spawn(async move {
            let r = admit(&mut c, "b", "m", 1, 1).await;
            if admitted(&r) {
                complete(&mut c, &r.lease_id, 1, 1, 0).await;
            }
            r
        }));
    }
    let mut passed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if admitted(&r) {
            passed += 1;
        } else {
            assert_eq!(
                RejectReason::try_from(r.reason).unwrap(),
                RejectReason::RequestsPerMinute
            );
        }
    }
    assert_eq!(passed, 3);
    // Spend is shared: both replicas report what both charged.
    for limiter in [h.service.limiter(), second.limiter()] {
        let usage = limiter.usage().await.unwrap();
        let a = usage.iter().find(|u| u.tenant == "a").unwrap();
        assert!(
            (a.spend_today_usd - 0.06).abs() < 1e-9,
            "{}",
            a.spend_today_usd
        );
        let b = usage.iter().find(|u| u.tenant == "b").unwrap();
        assert!(
            (b.spend_today_usd - 3.0 * 0.003).abs() < 1e-9,
            "{}",
            b.spend_today_usd
        );
    }
}
