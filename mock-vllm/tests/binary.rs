//! The binary's process contract: one LISTENING line, then a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn prints_listening_and_exits_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-vllm"))
        .args(["--listen", "127.0.0.1:0", "--replica-name", "bin-test"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let addr = line
        .trim()
        .strip_prefix("LISTENING http=")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let health = runtime.block_on(async {
        reqwest::get(format!("http://{addr}/health"))
            .await
            .expect("health")
    });
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["x-mock-replica"], "bin-test");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            assert!(exit.success(), "exit status {exit}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
