//! Fair admission through the whole chain: real Envoy with every filter,
//! ratelimit-service's per-pool queue, and one slow mock replica whose few
//! slots make the queue fill. Each test asserts an ordering property of the
//! queue, not a timing, so a busy machine slows it down without failing it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use gateway_e2e::{FilterSet, chat, eventually, metric, post, ratelimit_metrics, start_with};
use tenant_registry::api_key_digest_hex;
use testbed::{PoolSpec, Testbed, TestbedConfig};

const MODEL: &str = "llama-3.1-8b-instruct";
const POOL: &str = "latency";
/// One decode step of the mock, whatever the batch: a request for n tokens
/// runs about n × 10 ms once admitted.
const STEP_US: u64 = 10_000;
pub(crate) const LIGHT_KEY: &str = "sk-light-live";
const KEYS: [&str; 4] = ["sk-heavy-live", LIGHT_KEY, "sk-gold-live", "sk-silver-live"];

/// The fairness registry with `in_flight` slots on the one replica and
/// requests giving up after `queue_wait_ms` in the queue.
fn registry(in_flight: u32, queue_wait_ms: u64) -> String {
    let mut text = include_str!("fixtures/fairness.toml")
        .replace(
            "max_in_flight_per_replica = 2",
            &format!("max_in_flight_per_replica = {in_flight}"),
        )
        .replace(
            "max_queue_wait_ms = 15000",
            &format!("max_queue_wait_ms = {queue_wait_ms}"),
        );
    for key in KEYS {
        text = text.replace(&format!("{{{{digest:{key}}}}}"), &api_key_digest_hex(key));
    }
    text
}

/// Full chain, one slow replica in pool `latency`, the queue in `mode`.
pub(crate) fn start(mode: &str, in_flight: u32, queue_wait_ms: u64) -> Testbed {
    start_registry(mode, registry(in_flight, queue_wait_ms))
}

fn start_registry(mode: &str, registry: String) -> Testbed {
    let mut config = TestbedConfig::new(registry);
    config.filters = FilterSet::ALL;
    config.ratelimit = true;
    config.ratelimit_args = vec!["--queue-mode".to_owned(), mode.to_owned()];
    let mock_args = [
        "--decode-base-us",
        &STEP_US.to_string(),
        "--decode-us-per-seq",
        "0",
        "--prefill-us-per-token",
        "0",
        "--max-num-seqs",
        "16",
    ]
    .map(str::to_owned)
    .to_vec();
    config.pools = vec![PoolSpec {
        mock_args,
        ..PoolSpec::new(POOL, 1)
    }];
    start_with(config)
}

/// How one request ended, and when.
#[derive(Debug, Clone)]
struct Done {
    tag: String,
    /// HTTP status, or `None` when the client gave up or the transport failed.
    status: Option<u16>,
    at: Instant,
}

/// Sends a chat request in the background; `tag` opens the prompt so the
/// mock's request log can tell requests apart.
fn send(
    gateway: &str,
    key: &str,
    tag: String,
    max_tokens: u32,
    timeout: Duration,
    done: &Arc<Mutex<Vec<Done>>>,
) -> JoinHandle<()> {
    let url = format!("{gateway}/v1/chat/completions");
    let key = key.to_owned();
    let done = Arc::clone(done);
    thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .expect("client");
        let body = chat(
            MODEL,
            &format!("{tag} please write a long story"),
            max_tokens,
        );
        let status = client
            .post(url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .and_then(|r| {
                let status = r.status().as_u16();
                r.bytes().map(|_| status)
            })
            .ok();
        done.lock().expect("results").push(Done {
            tag,
            status,
            at: Instant::now(),
        });
    })
}

/// Chat requests the mock replica received whose prompt starts with `prefix`.
fn upstream_count(tb: &Testbed, prefix: &str) -> usize {
    tb.upstream_requests()
        .iter()
        .filter(|r| r["path"] == "/v1/chat/completions")
        .filter(|r| {
            r["body"]["messages"][0]["content"]
                .as_str()
                .is_some_and(|c| c.starts_with(prefix))
        })
        .count()
}

fn queue_gauge(tb: &Testbed, name: &str, tenant: &str) -> Option<f64> {
    metric(
        &ratelimit_metrics(tb),
        name,
        &[("pool", POOL), ("tenant", tenant)],
    )
}

const HEAVY_BACKLOG: usize = 12;

/// Heavy sends `count` requests of `max_tokens` at once; returns when two of
/// them hold the pool's slots and the rest have had time to queue.
fn heavy_backlog(
    tb: &Testbed,
    count: usize,
    max_tokens: u32,
    done: &Arc<Mutex<Vec<Done>>>,
) -> Vec<JoinHandle<()>> {
    let gateway = tb.gateway_url();
    let threads = (0..count)
        .map(|i| {
            send(
                &gateway,
                "sk-heavy-live",
                format!("heavy-{i}"),
                max_tokens,
                Duration::from_secs(30),
                done,
            )
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || upstream_count(tb, "heavy-")
            >= 2),
        "heavy requests never reached the pool"
    );
    thread::sleep(Duration::from_millis(300));
    threads
}

/// Heavy fills the pool's two slots and queues ten more; then light sends
/// one request. Returns how many heavy requests completed before light's.
fn heavy_done_before_light(mode: &str) -> usize {
    let tb = start(mode, 2, 30_000);
    let gateway = tb.gateway_url();
    let done = Arc::new(Mutex::new(Vec::new()));
    let timeout = Duration::from_secs(30);
    // 80 tokens: each request holds its slot ~0.8 s.
    let mut threads = heavy_backlog(&tb, HEAVY_BACKLOG, 80, &done);
    assert!(
        upstream_count(&tb, "heavy-") < HEAVY_BACKLOG / 2,
        "the pool did not hold the backlog back"
    );
    threads.push(send(
        &gateway,
        LIGHT_KEY,
        "light-0".to_owned(),
        80,
        timeout,
        &done,
    ));
    for t in threads {
        t.join().expect("client thread");
    }
    let done = done.lock().expect("results").clone();
    assert_eq!(done.len(), HEAVY_BACKLOG + 1);
    for d in &done {
        assert_eq!(d.status, Some(200), "{d:?}");
    }
    let light = done
        .iter()
        .find(|d| d.tag == "light-0")
        .expect("light request")
        .at;
    done.iter()
        .filter(|d| d.tag.starts_with("heavy-") && d.at < light)
        .count()
}

#[test]
fn fair_queue_serves_a_light_tenant_before_a_heavy_backlog() {
    let before = heavy_done_before_light("fair");
    eprintln!("fair: {before} heavy requests completed before the light one");
    // Light joins at heavy's counter; the tie goes to heavy's older head, so
    // light runs in the next pair of slots: about 2 heavy requests first.
    assert!(
        before <= 4,
        "{before} of {HEAVY_BACKLOG} heavy requests completed before the light tenant's one"
    );
}

#[test]
fn fifo_queue_makes_a_light_tenant_wait_behind_a_heavy_backlog() {
    // The same scenario in arrival order: proof that the fair test can fail.
    let before = heavy_done_before_light("fifo");
    eprintln!("fifo: {before} heavy requests completed before the light one");
    assert!(
        before >= HEAVY_BACKLOG - 3,
        "only {before} of {HEAVY_BACKLOG} heavy requests completed before the light one in FIFO"
    );
}

#[test]
fn a_light_tenant_starts_at_once_on_the_reserve_next_to_a_heavy_backlog() {
    // Two slots plus two for light tenants only.
    let registry = registry(2, 30_000).replace(
        "light_tenant_reserve_per_replica = 0",
        "light_tenant_reserve_per_replica = 2",
    );
    let tb = start_registry("fair", registry);
    let gateway = tb.gateway_url();
    let done = Arc::new(Mutex::new(Vec::new()));
    let timeout = Duration::from_secs(30);
    // 500 tokens: each heavy request holds its slot ~5 s.
    let mut threads = heavy_backlog(&tb, 4, 500, &done);
    assert_eq!(
        upstream_count(&tb, "heavy-"),
        2,
        "heavy, the tenant with all the service, must not use the reserve"
    );
    // Light sends a burst of two: under strict VTC the second would wait for
    // heavy's next turn; as a light tenant both start on the reserve.
    threads.extend((0..2).map(|i| {
        send(
            &gateway,
            LIGHT_KEY,
            format!("light-{i}"),
            300,
            timeout,
            &done,
        )
    }));
    assert!(
        // Well before the first heavy request ends (~5 s after it started).
        eventually(Duration::from_secs(2), || upstream_count(&tb, "light-")
            == 2),
        "light's burst waited: {} of 2 reached the pool",
        upstream_count(&tb, "light-")
    );
    assert_eq!(
        upstream_count(&tb, "heavy-"),
        2,
        "light started before any heavy request finished"
    );
    // Operators see the over-commit (telemetry updates every 2 s).
    let over_cap = || {
        metric(
            &ratelimit_metrics(&tb),
            "ratelimit_pool_over_cap",
            &[("pool", POOL)],
        )
    };
    assert!(
        eventually(Duration::from_secs(3), || over_cap() == Some(2.0)),
        "ratelimit_pool_over_cap {:?} while light runs on the reserve",
        over_cap()
    );
    for t in threads {
        t.join().expect("client thread");
    }
    let done = done.lock().expect("results").clone();
    assert_eq!(done.len(), 6);
    for d in &done {
        assert_eq!(d.status, Some(200), "{d:?}");
    }
}

#[test]
fn weights_shift_admitted_shares_under_saturation() {
    let tb = start("fair", 4, 30_000);
    let gateway = tb.gateway_url();
    let done = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    // Six closed-loop clients per tenant against four slots: both stay
    // backlogged the whole time. 30 tokens hold a slot ~0.3 s.
    let workers: Vec<JoinHandle<()>> = [("gold", "sk-gold-live"), ("silver", "sk-silver-live")]
        .into_iter()
        .flat_map(|(tenant, key)| (0..6).map(move |w| (tenant, key, w)))
        .map(|(tenant, key, w)| {
            let gateway = gateway.clone();
            let done = Arc::clone(&done);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let tag = format!("{tenant}-{w}-{i}");
                    send(&gateway, key, tag, 30, Duration::from_secs(30), &done)
                        .join()
                        .expect("client");
                    i += 1;
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(8));
    // Live telemetry, read while both tenants are still backlogged.
    let exposition = ratelimit_metrics(&tb);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }

    let window = (
        started + Duration::from_millis(1500),
        started + Duration::from_secs(8),
    );
    let done = done.lock().expect("results").clone();
    let served = |tenant: &str| {
        done.iter()
            .filter(|d| d.tag.starts_with(tenant) && d.status == Some(200))
            .filter(|d| d.at >= window.0 && d.at <= window.1)
            .count() as f64
    };
    assert!(
        done.iter().all(|d| d.status == Some(200)),
        "a request failed: {done:?}"
    );
    let (gold, silver) = (served("gold"), served("silver"));
    assert!(
        gold + silver >= 30.0,
        "too few requests to judge shares: {gold} + {silver}"
    );
    let ratio = gold / silver;
    eprintln!("completed in the window: gold {gold}, silver {silver}, ratio {ratio:.2}");
    assert!(
        (1.5..=2.7).contains(&ratio),
        "gold/silver completions {gold}/{silver} = {ratio:.2}, want ~2"
    );

    // The service gauge is divided by the weight: both near equal.
    let service = |tenant: &str| {
        metric(
            &exposition,
            "ratelimit_queue_service_weighted_tokens",
            &[("pool", POOL), ("tenant", tenant)],
        )
        .unwrap_or_else(|| panic!("no service gauge for {tenant}:\n{exposition}"))
    };
    let normalised = service("gold") / service("silver");
    assert!(
        (0.75..=1.33).contains(&normalised),
        "weighted service gold/silver = {normalised:.2}"
    );
    let jain = metric(
        &exposition,
        "ratelimit_queue_jains_index",
        &[("pool", POOL)],
    )
    .expect("Jain's index gauge");
    eprintln!("weighted service gold/silver {normalised:.3}, live Jain's index {jain:.4}");
    assert!(jain >= 0.9, "live Jain's index {jain}");
}

#[test]
fn a_queued_client_that_disconnects_leaves_the_queue() {
    let tb = start("fair", 2, 30_000);
    let gateway = tb.gateway_url();
    let done = Arc::new(Mutex::new(Vec::new()));
    // Two 10 s requests hold both slots.
    let hogs: Vec<JoinHandle<()>> = (0..2)
        .map(|i| {
            send(
                &gateway,
                "sk-heavy-live",
                format!("hog-{i}"),
                1000,
                Duration::from_secs(60),
                &done,
            )
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || upstream_count(
        &tb, "hog-"
    ) == 2));
    // Light waits behind them, and gives up after 3 s.
    let quitter = send(
        &gateway,
        LIGHT_KEY,
        "quitter".to_owned(),
        8,
        Duration::from_secs(3),
        &done,
    );
    assert!(
        eventually(Duration::from_secs(3), || queue_gauge(
            &tb,
            "ratelimit_queue_depth",
            "light"
        ) == Some(1.0)),
        "the light request was never seen waiting"
    );
    quitter.join().expect("client");
    assert_eq!(
        done.lock().expect("results")[0].status,
        None,
        "the quitter was answered"
    );
    // It leaves the queue while the hogs still hold the pool: because it
    // was cancelled, not because it was admitted.
    let left = eventually(Duration::from_secs(4), || {
        queue_gauge(&tb, "ratelimit_queue_depth", "light") == Some(0.0)
    });
    let hogs_running = done
        .lock()
        .expect("results")
        .iter()
        .all(|d| !d.tag.starts_with("hog-"));
    assert!(
        hogs_running,
        "the hogs finished before the check: too slow to tell cancel from admission"
    );
    assert!(
        left,
        "the disconnected request is still queued 4 s after its client left"
    );
    for h in hogs {
        h.join().expect("hog");
    }
    // No ghost: nothing of light's holds a slot or a lease once the pool is free.
    thread::sleep(Duration::from_millis(2500));
    let exposition = ratelimit_metrics(&tb);
    assert_eq!(
        metric(
            &exposition,
            "ratelimit_queue_in_flight",
            &[("pool", POOL), ("tenant", "light")]
        ),
        Some(0.0),
        "the disconnected request holds a pool slot"
    );
    assert_eq!(
        metric(
            &exposition,
            "ratelimit_leases_active",
            &[("tenant", "light")]
        ),
        Some(0.0)
    );
    // The tenant is admitted normally afterwards; the cancelled request never ran.
    send(
        &gateway,
        LIGHT_KEY,
        "after".to_owned(),
        8,
        Duration::from_secs(30),
        &done,
    )
    .join()
    .expect("client");
    assert_eq!(
        upstream_count(&tb, "quitter"),
        0,
        "the disconnected request reached the pool"
    );
    assert_eq!(upstream_count(&tb, "after"), 1);
    let done = done.lock().expect("results").clone();
    assert!(
        done.iter()
            .filter(|d| d.tag != "quitter")
            .all(|d| d.status == Some(200)),
        "{done:?}"
    );
}

#[test]
fn stale_replica_metrics_stop_admission() {
    let tb = start("fair", 2, 1500);
    let gateway = tb.gateway_url();
    let replica = tb.replica_urls(POOL).pop().expect("one replica");
    let control = testbed::http_client();
    let switch_metrics = |enabled: bool| {
        control
            .post(format!("{replica}/debug/metrics?enabled={enabled}"))
            .send()
            .and_then(|r| r.error_for_status())
            .expect("metrics switch");
    };
    let done = Arc::new(Mutex::new(Vec::new()));
    let call = |tag: &str| {
        send(
            &gateway,
            LIGHT_KEY,
            tag.to_owned(),
            8,
            Duration::from_secs(30),
            &done,
        )
        .join()
        .expect("client");
        done.lock()
            .expect("results")
            .last()
            .cloned()
            .expect("result")
    };
    assert_eq!(call("fresh").status, Some(200));

    switch_metrics(false);
    // Stale after 3 scrape intervals (300 ms); the telemetry shows it within 2 s.
    assert!(
        eventually(Duration::from_secs(4), || {
            metric(
                &ratelimit_metrics(&tb),
                "ratelimit_pool_capacity",
                &[("pool", POOL)],
            ) == Some(0.0)
        }),
        "pool capacity did not drop to 0 with stale metrics"
    );
    let sent = Instant::now();
    let stale = post(
        &tb,
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {LIGHT_KEY}"))],
        &chat(MODEL, "stale please write a long story", 8),
    );
    stale.assert_error(503, "queue_timeout");
    assert!(
        sent.elapsed() >= Duration::from_millis(1400),
        "refused before the queue wait ran out"
    );
    assert_eq!(
        upstream_count(&tb, "stale"),
        0,
        "a request reached a replica with stale metrics"
    );

    // A request waiting when the metrics come back is admitted.
    let waiting = send(
        &gateway,
        LIGHT_KEY,
        "revived".to_owned(),
        8,
        Duration::from_secs(30),
        &done,
    );
    thread::sleep(Duration::from_millis(400));
    assert_eq!(
        upstream_count(&tb, "revived"),
        0,
        "admitted while metrics were stale"
    );
    switch_metrics(true);
    waiting.join().expect("client");
    let revived = done
        .lock()
        .expect("results")
        .last()
        .cloned()
        .expect("result");
    assert_eq!(revived.status, Some(200), "{revived:?}");
    assert_eq!(upstream_count(&tb, "revived"), 1);
}
