//! A benchmark stopped by a signal stops what it started: SIGTERM to
//! `gateway-bench` in the middle of a run leaves no Envoy or mock pool
//! behind (they are the bench's children, and a signal skips the drops that
//! would stop them).

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use procfs::process::{ProcState, Process, all_processes};
use test_support::poll::eventually;

/// Every live process below `root`, with its command name.
fn descendants(root: i32) -> Vec<(i32, String)> {
    let Ok(all) = all_processes() else {
        return Vec::new();
    };
    let stats: Vec<_> = all
        .filter_map(|p| p.ok()?.stat().ok())
        .map(|s| (s.pid, s.ppid, s.comm))
        .collect();
    let mut below = BTreeSet::from([root]);
    let mut found = Vec::new();
    // Parents come before children in no particular order: sweep until
    // nothing more joins.
    loop {
        let joined: Vec<_> = stats
            .iter()
            .filter(|(pid, ppid, _)| below.contains(ppid) && !below.contains(pid))
            .collect();
        if joined.is_empty() {
            return found;
        }
        for (pid, _, comm) in joined {
            below.insert(*pid);
            found.push((*pid, comm.clone()));
        }
    }
}

/// Whether `pid` still runs (a zombie left for init to reap does not).
fn alive(pid: i32) -> bool {
    Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| !matches!(s.state(), Ok(ProcState::Zombie | ProcState::Dead)))
}

fn send(signal: &str, pid: i32) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn sigterm_mid_run_stops_every_testbed_process() {
    let out = tempfile::tempdir().expect("temporary directory");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_gateway-bench"))
        .args(["auth", "--duration", "60", "--rounds", "1", "--warmup", "0"])
        .arg("--out")
        .arg(out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway-bench starts");
    let root = i32::try_from(bench.id()).expect("pid fits");

    // Both sides' testbeds: two Envoys and their mock pools.
    let mut seen = Vec::new();
    let started = eventually(Duration::from_secs(120), || {
        seen = descendants(root);
        let count = |name: &str| seen.iter().filter(|(_, c)| c.starts_with(name)).count();
        count("envoy") >= 2 && count("mock-vllm") >= 2
    });
    if !started {
        let _ = bench.kill();
        let _ = bench.wait();
        panic!("the bench did not start two testbeds within 120 s; its processes: {seen:?}");
    }

    assert!(send("-TERM", root), "SIGTERM to the bench");
    let status = bench.wait().expect("gateway-bench is reaped");
    let stopped = eventually(Duration::from_secs(5), || {
        seen.iter().all(|(pid, _)| !alive(*pid))
    });
    let left: Vec<_> = seen.iter().filter(|(pid, _)| alive(*pid)).collect();
    // Leave nothing running even when the assertions below fail.
    for (pid, _) in &left {
        send("-KILL", *pid);
    }
    assert!(stopped, "still running after the bench exited: {left:?}");
    assert_eq!(status.code(), Some(130), "exit after SIGTERM: {status:?}");
    assert!(
        status.signal().is_none(),
        "it handled the signal: {status:?}"
    );
}
