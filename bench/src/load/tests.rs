//! The load generator against a tiny local HTTP server whose stalls we control.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Answers `200 ok` to every request; the first one is held for `first_stall`.
struct TestServer {
    url: String,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(first_stall: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let served = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let counter = Arc::clone(&served);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                let stalled = Arc::clone(&stalled);
                tokio::spawn(serve(stream, counter, stalled, first_stall));
            }
        });
        Self { url, served, task }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    served: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
    stall: Duration,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request: headers, then `content-length` bytes of body.
        let (head_end, body_len) = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, len);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        while buffer.len() < head_end + body_len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        buffer.drain(..head_end + body_len);
        if !stalled.swap(true, Ordering::SeqCst) {
            tokio::time::sleep(stall).await;
        }
        served.fetch_add(1, Ordering::SeqCst);
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

fn endpoint(server: &TestServer) -> Arc<Endpoint> {
    let recipe = RequestRecipe::post_json(
        "test",
        "/v1/chat/completions",
        &serde_json::json!({ "model": "m" }),
    );
    Arc::new(Endpoint::new(&server.url, &recipe, Duration::from_secs(5)).expect("endpoint"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_charges_a_stall_to_every_request_scheduled_during_it() {
    let server = TestServer::start(Duration::from_millis(500)).await;
    let plan = OpenLoop {
        rate: 100.0,
        duration: Duration::from_secs(1),
        // One request at a time: the rest queue behind the stalled one, as
        // they would behind a stalled server connection.
        max_in_flight: 1,
    };
    let recorder: PhaseRecorder = run_open_loop(
        endpoint(&server),
        plan,
        &PhaseProgress::new("test", plan.duration),
    )
    .await;
    let summary = recorder.summary();
    assert_eq!(summary.ok, 100, "{summary:?}");
    assert_eq!(server.served.load(Ordering::SeqCst), 100);
    // Requests meant for the first 200 ms of the 500 ms stall waited over
    // 300 ms each: a fifth of all requests. Timed from when they were
    // actually sent, they would look instant.
    assert!(summary.latency_ms.p90 > 300.0, "{:?}", summary.latency_ms);
    assert!(summary.latency_ms.max >= 490.0, "{:?}", summary.latency_ms);
    assert!(summary.latency_ms.p50 < 400.0, "{:?}", summary.latency_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_every_response_and_its_rate() {
    let server = TestServer::start(Duration::ZERO).await;
    let plan = ClosedLoop {
        connections: 4,
        duration: Duration::from_millis(500),
    };
    let recorder: PhaseRecorder = run_closed_loop(
        endpoint(&server),
        plan,
        &PhaseProgress::new("test", plan.duration),
    )
    .await;
    let summary = recorder.summary();
    assert!(summary.ok > 50, "{summary:?}");
    assert_eq!(summary.ok, server.served.load(Ordering::SeqCst));
    assert_eq!(summary.error_count(), 0);
    let rate = summary.ok as f64 / summary.elapsed_s;
    assert!((summary.throughput_rps - rate).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_errors_not_latencies() {
    let server = TestServer::start(Duration::ZERO).await;
    let url = server.url.clone();
    drop(server);
    // Give the aborted accept loop time to close the listener.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let recipe = RequestRecipe::post_json("test", "/", &serde_json::json!({}));
    let endpoint =
        Arc::new(Endpoint::new(&url, &recipe, Duration::from_secs(2)).expect("endpoint"));
    let plan = OpenLoop {
        rate: 50.0,
        duration: Duration::from_millis(200),
        max_in_flight: 8,
    };
    let recorder: PhaseRecorder =
        run_open_loop(endpoint, plan, &PhaseProgress::new("test", plan.duration)).await;
    let summary = recorder.summary();
    assert_eq!(summary.ok, 0);
    assert_eq!(summary.errors.get("connect"), Some(&10), "{summary:?}");
    assert!(summary.latency_ms.p50.is_nan());
}
