//! Behaviour of the queue as Admit uses it: async, with tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use super::*;

fn queue(capacity: u32, mode: QueueMode) -> FairQueue {
    queue_with_reserve(capacity, mode, 0)
}

fn queue_with_reserve(capacity: u32, mode: QueueMode, light_reserve: u32) -> FairQueue {
    FairQueue::new(QueueConfig {
        policy: SchedulingPolicy {
            mode,
            ..SchedulingPolicy::default()
        },
        capacity,
        max_depth_per_tenant: 1_000,
        max_wait: Duration::from_secs(3_600),
        light_reserve,
    })
}

fn ticket(tenant: &str, weight: f64, est_input: u64, est_output: u64) -> Ticket {
    Ticket {
        tenant: tenant.to_owned(),
        weight,
        priority: 0,
        est_input,
        est_output,
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3_600)
}

/// Spawns a request that waits for room, then holds it for `hold`.
fn spawn_request(
    q: &FairQueue,
    t: Ticket,
    hold: Duration,
) -> JoinHandle<Result<Duration, QueueError>> {
    let q = q.clone();
    tokio::spawn(async move {
        let permit = q.acquire(t, far()).await?;
        sleep(hold).await;
        Ok(permit.waited())
    })
}

/// Lets spawned tasks run until they block.
async fn settle_tasks() {
    sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn two_to_one_weights_get_two_to_one_service_under_saturation() {
    let q = queue(4, QueueMode::Fair);
    let end = Instant::now() + Duration::from_secs(120);
    let mut workers = Vec::new();
    let mut served = Vec::new();
    // Different request shapes per tenant: fairness is in weighted tokens.
    for (tenant, weight, input, output) in [("gold", 2.0, 300, 120), ("bronze", 1.0, 80, 40)] {
        let tokens = Arc::new(AtomicU64::new(0));
        served.push(tokens.clone());
        for _ in 0..8 {
            let q = q.clone();
            let tokens = tokens.clone();
            workers.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let mut permit = q
                        .acquire(ticket(tenant, weight, input, output), far())
                        .await
                        .unwrap();
                    tokens.fetch_add(input + 2 * output, Ordering::Relaxed);
                    sleep(Duration::from_millis(100)).await;
                    permit.settle(input, output);
                }
            }));
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let ratio = served[0].load(Ordering::Relaxed) as f64 / served[1].load(Ordering::Relaxed) as f64;
    assert!(
        (ratio - 2.0).abs() < 0.06,
        "gold:bronze weighted tokens = {ratio}"
    );
    let stats = q.snapshot();
    let normalised: Vec<f64> = stats.tenants.iter().map(|t| t.service).collect();
    assert!(jains_index(&normalised) > 0.999, "{normalised:?}");
}

/// A burst of 30 long requests from one tenant arrives just before one short
/// request from another. Returns the short request's wait.
async fn light_wait_behind_burst(mode: QueueMode) -> Duration {
    let q = queue(2, mode);
    let heavy: Vec<_> = (0..30)
        .map(|_| spawn_request(&q, ticket("batch", 1.0, 4000, 1000), Duration::from_secs(1)))
        .collect();
    sleep(Duration::from_millis(100)).await;
    let wait = spawn_request(&q, ticket("chat", 1.0, 100, 50), Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    for h in heavy {
        h.await.unwrap().unwrap();
    }
    wait
}

#[tokio::test(start_paused = true)]
async fn light_tenant_does_not_wait_for_the_heavy_backlog() {
    // Fair: the chat request gets the first slot freed after it arrives.
    let fair = light_wait_behind_burst(QueueMode::Fair).await;
    assert!(fair <= Duration::from_millis(900), "fair wait {fair:?}");
    // FIFO baseline: behind all 30 requests, two at a time.
    let fifo = light_wait_behind_burst(QueueMode::Fifo).await;
    assert!(fifo >= Duration::from_secs(14), "fifo wait {fifo:?}");
}

#[tokio::test(start_paused = true)]
async fn full_tenant_queue_is_refused_at_once() {
    let q = FairQueue::new(QueueConfig {
        max_depth_per_tenant: 2,
        ..QueueConfig::for_pool(&Default::default(), SchedulingPolicy::default())
    });
    q.set_capacity(0);
    let waiting: Vec<_> = (0..2)
        .map(|_| spawn_request(&q, ticket("a", 1.0, 1, 1), Duration::ZERO))
        .collect();
    settle_tasks().await;
    let refused = timeout(Duration::ZERO, q.acquire(ticket("a", 1.0, 1, 1), far()))
        .await
        .expect("refusal is immediate");
    assert_eq!(refused.unwrap_err(), QueueError::QueueFull { queued: 2 });
    // Another tenant's queue is separate.
    let other = spawn_request(&q, ticket("b", 1.0, 1, 1), Duration::ZERO);
    q.set_capacity(3);
    other.await.unwrap().unwrap();
    for w in waiting {
        w.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn waiter_times_out_at_max_wait_or_deadline_and_leaves() {
    let q = FairQueue::new(QueueConfig {
        max_wait: Duration::from_millis(500),
        ..QueueConfig::for_pool(&Default::default(), SchedulingPolicy::default())
    });
    q.set_capacity(0);
    let started = Instant::now();
    let err = q.acquire(ticket("a", 1.0, 1, 1), far()).await.unwrap_err();
    assert_eq!(
        err,
        QueueError::Timeout {
            waited: Duration::from_millis(500)
        }
    );
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    let short = Instant::now() + Duration::from_millis(200);
    let err = q.acquire(ticket("a", 1.0, 1, 1), short).await.unwrap_err();
    assert_eq!(
        err,
        QueueError::Timeout {
            waited: Duration::from_millis(200)
        }
    );
    let stats = q.snapshot();
    assert_eq!(stats.queued, 0);
    assert_eq!(stats.tenant("a").unwrap().timed_out, 2);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_leaves_at_once_and_does_not_block_others() {
    let q = queue(1, QueueMode::Fair);
    let holder = q.acquire(ticket("a", 1.0, 1, 1), far()).await.unwrap();
    let cancelled = spawn_request(&q, ticket("b", 1.0, 1, 1), Duration::ZERO);
    settle_tasks().await;
    let next = spawn_request(&q, ticket("c", 1.0, 1, 1), Duration::from_secs(10));
    settle_tasks().await;
    assert_eq!(q.snapshot().queued, 2);

    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    let stats = q.snapshot();
    assert_eq!(stats.queued, 1);
    assert_eq!(stats.tenant("b").unwrap().cancelled, 1);

    drop(holder);
    settle_tasks().await;
    let stats = q.snapshot();
    assert_eq!(stats.tenant("c").unwrap().in_flight, 1);
    assert_eq!(stats.tenant("b").unwrap().in_flight, 0);
    next.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn waiter_dropped_right_after_grant_gives_the_room_back() {
    let q = queue(1, QueueMode::Fair);
    let holder = q.acquire(ticket("a", 1.0, 1, 1), far()).await.unwrap();
    let mut granted_but_gone = Box::pin(q.acquire(ticket("b", 1.0, 100, 100), far()));
    assert!(
        timeout(Duration::ZERO, &mut granted_but_gone)
            .await
            .is_err()
    );
    drop(holder);
    // Room was handed to b's waiter, which has not run since.
    let stats = q.snapshot();
    assert_eq!((stats.in_flight, stats.queued), (1, 0));
    drop(granted_but_gone);
    let stats = q.snapshot();
    assert_eq!(stats.in_flight, 0);
    // b never ran, so its charge is taken back.
    assert_eq!(stats.tenant("b").unwrap().service, 0.0);
    let after = timeout(Duration::ZERO, q.acquire(ticket("c", 1.0, 1, 1), far())).await;
    assert!(after.expect("room is free").is_ok());
}

#[tokio::test(start_paused = true)]
async fn dropped_permit_frees_room_for_the_next_waiter() {
    let q = queue(2, QueueMode::Fair);
    let first = q.acquire(ticket("a", 1.0, 1, 1), far()).await.unwrap();
    let _second = q.acquire(ticket("a", 1.0, 1, 1), far()).await.unwrap();
    let third = spawn_request(&q, ticket("b", 1.0, 1, 1), Duration::ZERO);
    settle_tasks().await;
    assert!(!third.is_finished());
    assert_eq!(q.snapshot().in_flight, 2);
    drop(first);
    third.await.unwrap().unwrap();
    assert_eq!(q.snapshot().in_flight, 1);
}

#[tokio::test(start_paused = true)]
async fn saturated_pool_admits_nothing_until_cleared() {
    let q = queue(4, QueueMode::Fair);
    q.set_saturated(true);
    let waiting = spawn_request(&q, ticket("a", 1.0, 1, 1), Duration::ZERO);
    sleep(Duration::from_secs(10)).await;
    assert!(!waiting.is_finished());
    let stats = q.snapshot();
    assert!(stats.saturated);
    assert_eq!((stats.in_flight, stats.queued), (0, 1));
    q.set_saturated(false);
    assert_eq!(waiting.await.unwrap().unwrap(), Duration::from_secs(10));

    // No capacity (every replica saturated) behaves the same.
    q.set_capacity(0);
    let waiting = spawn_request(&q, ticket("a", 1.0, 1, 1), Duration::ZERO);
    sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    assert!(q.snapshot().saturated);
    q.set_capacity(1);
    waiting.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn settle_replaces_the_estimate_with_real_usage() {
    let q = queue(1, QueueMode::Fair);
    let mut permit = q.acquire(ticket("a", 2.0, 100, 1000), far()).await.unwrap();
    let a = |q: &FairQueue| q.snapshot().tenant("a").unwrap().clone();
    assert_eq!(a(&q).virtual_counter, (100.0 + 2.0 * 1000.0) / 2.0);
    permit.settle(100, 10);
    assert_eq!(a(&q).virtual_counter, (100.0 + 2.0 * 10.0) / 2.0);
    assert_eq!(a(&q).service, 60.0);
    drop(permit);
    assert_eq!(a(&q).in_flight, 0);
    assert_eq!(a(&q).waits.count, 1);
}

/// Admit runs under tonic (multi-threaded): the queue, the acquire future
/// and the permit kept in a lease must all cross threads.
#[test]
fn queue_future_and_permit_are_thread_safe() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<FairQueue>();
    send_sync::<QueuePermit>();
    let q = queue(1, QueueMode::Fair);
    send(&q.acquire(ticket("a", 1.0, 1, 1), far()));
}

#[test]
fn jains_index_ranges_from_one_over_n_to_one() {
    assert_eq!(jains_index(&[5.0, 5.0, 5.0]), 1.0);
    assert!((jains_index(&[9.0, 0.0, 0.0]) - 1.0 / 3.0).abs() < 1e-12);
    assert!((jains_index(&[2.0, 1.0]) - 0.9).abs() < 1e-12);
    assert_eq!(jains_index(&[]), 1.0);
}

#[test]
fn wait_histogram_quantiles() {
    let mut h = WaitHistogram::default();
    for ms in [0, 3, 7, 40, 90_000] {
        h.record(Duration::from_millis(ms));
    }
    assert_eq!(h.count, 5);
    assert_eq!(h.quantile(0.5), Some(Duration::from_millis(10)));
    assert_eq!(h.quantile(1.0), Some(Duration::from_secs(90)));
    assert_eq!(WaitHistogram::default().quantile(0.5), None);
}

#[tokio::test(start_paused = true)]
async fn light_reserve_lets_a_light_tenant_past_a_saturated_pool() {
    let q = queue_with_reserve(2, QueueMode::Fair, 2);
    // Heavy fills the pool and keeps a backlog.
    let heavy: Vec<_> = (0..6)
        .map(|_| spawn_request(&q, ticket("heavy", 1.0, 100, 100), Duration::from_secs(10)))
        .collect();
    settle_tasks().await;
    // The reserve is not for the tenant that has had the most service.
    assert_eq!(q.snapshot().in_flight, 2, "heavy must not use the reserve");
    // Light has nothing in flight: it starts at once, on the reserve.
    let light = q
        .acquire(ticket("light", 1.0, 10, 10), far())
        .await
        .unwrap();
    assert_eq!(light.waited(), Duration::ZERO);
    // Its second request too, although it now holds as many slots as its
    // share: it has had far less service than heavy lately.
    let second = q
        .acquire(ticket("light", 1.0, 10, 10), far())
        .await
        .unwrap();
    assert_eq!(second.waited(), Duration::ZERO);
    assert_eq!(q.snapshot().in_flight, 4);
    // The reserve is spent: a third waits like anyone.
    let third = spawn_request(&q, ticket("light", 1.0, 10, 10), Duration::ZERO);
    settle_tasks().await;
    assert!(!third.is_finished());
    assert_eq!(q.snapshot().in_flight, 4);
    drop((light, second));
    for h in heavy {
        h.abort();
    }
    third.abort();
}

#[tokio::test(start_paused = true)]
async fn light_reserve_is_never_for_the_heaviest_tenant() {
    let q = queue_with_reserve(2, QueueMode::Fair, 4);
    // "big" has just been served a lot, then holds one slot.
    for _ in 0..3 {
        drop(
            q.acquire(ticket("big", 1.0, 1000, 1000), far())
                .await
                .unwrap(),
        );
    }
    let held = q
        .acquire(ticket("big", 1.0, 1000, 1000), far())
        .await
        .unwrap();
    // "small" takes the other slot and keeps a backlog.
    let small: Vec<_> = (0..4)
        .map(|_| spawn_request(&q, ticket("small", 1.0, 10, 10), Duration::from_secs(10)))
        .collect();
    settle_tasks().await;
    // small had little service: its backlog spills onto the reserve...
    assert_eq!(q.snapshot().in_flight, 5);
    // ...but big, holding one slot yet with the most service lately, must
    // wait for a slot under the cap although the reserve has room.
    let big = spawn_request(&q, ticket("big", 1.0, 1000, 1000), Duration::ZERO);
    settle_tasks().await;
    assert!(!big.is_finished(), "big must not use the reserve");
    assert_eq!(q.snapshot().in_flight, 5);
    drop(held);
    big.abort();
    for h in small {
        h.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn light_reserve_is_off_in_fifo_and_without_capacity() {
    for (mode, capacity) in [(QueueMode::Fifo, 1), (QueueMode::Fair, 0)] {
        let q = queue_with_reserve(capacity, mode, 4);
        let heavy: Vec<_> = (0..3)
            .map(|_| spawn_request(&q, ticket("heavy", 1.0, 1, 1), Duration::from_secs(10)))
            .collect();
        settle_tasks().await;
        let light = spawn_request(&q, ticket("light", 1.0, 1, 1), Duration::ZERO);
        settle_tasks().await;
        assert!(
            !light.is_finished(),
            "{mode:?} capacity {capacity}: light must wait"
        );
        assert_eq!(q.snapshot().in_flight, capacity);
        light.abort();
        for h in heavy {
            h.abort();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_returning_tenant_wins_the_tie_against_an_older_backlog() {
    let q = queue(1, QueueMode::Fair);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let run = |tenant: &'static str| {
        let (q, order) = (q.clone(), order.clone());
        tokio::spawn(async move {
            let permit = q.acquire(ticket(tenant, 1.0, 10, 10), far()).await;
            order.lock().unwrap().push(tenant);
            sleep(Duration::from_millis(100)).await;
            drop(permit);
        })
    };
    let heavy: Vec<_> = (0..4).map(|_| run("heavy")).collect();
    settle_tasks().await;
    // Light is lifted to heavy's counter: a tie, which the tenant with
    // nothing in flight must win, so it runs right after the current request.
    let light = run("light");
    for h in heavy {
        h.await.unwrap();
    }
    light.await.unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(order[..2], ["heavy", "light"], "{order:?}");
}
