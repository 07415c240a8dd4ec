//! Child processes of the testbed: started with their output in a log file,
//! awaited until they announce their addresses, and always stopped on drop.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::TestbedError;

/// Every child this process has started and not yet reaped, with whether
/// it leads a process group: what [`stop_all_on_signal`] stops when a
/// signal ends this process before the children's drops run. A pid stays
/// here until its child is reaped (an exited child that is not reaped stays
/// a zombie), so it can never name some later, unrelated process.
static LIVE: Mutex<Vec<(i32, bool)>> = Mutex::new(Vec::new());

fn track(pid: u32, group: bool) {
    if let (Ok(pid), Ok(mut live)) = (i32::try_from(pid), LIVE.lock()) {
        live.push((pid, group));
    }
}

fn untrack(pid: u32) {
    if let (Ok(pid), Ok(mut live)) = (i32::try_from(pid), LIVE.lock()) {
        live.retain(|&(p, _)| p != pid);
    }
}

/// A child started outside [`ManagedProcess`] (the bench's redis-server),
/// stopped by [`stop_all_on_signal`] while this guard lives. Drop the guard
/// before the child is reaped.
pub struct Tracked(u32);

impl Tracked {
    pub fn new(pid: u32) -> Self {
        track(pid, false);
        Self(pid)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        untrack(self.0);
    }
}

/// Set once a signal's handler has started stopping the children.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether [`stop_all_on_signal`]'s handler is stopping the children and
/// about to exit: the main thread's testbeds then fail under it, and it
/// should wait for that exit rather than report their failure.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Makes SIGINT, SIGTERM and SIGHUP stop every child started through
/// [`ManagedProcess`] (SIGTERM, a short grace, then SIGKILL) and exit with
/// 130. For programs such as `gateway-bench` that hold testbeds on their
/// main thread: a signal ends the process without running the drops that
/// stop the children, and mock pools and Envoys would outlive it. Call it
/// once, early; it fails if the process already has a signal handler set
/// through `ctrlc`.
pub fn stop_all_on_signal() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        STOPPING.store(true, Ordering::SeqCst);
        let live = LIVE.lock().map(|live| live.clone()).unwrap_or_default();
        for &(pid, group) in &live {
            signal_child(pid, group, Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut running = live.clone();
        while !running.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            // Reaps what has exited: an exited child nobody reaps is a
            // zombie, which takes signals as if it still ran. One reaped
            // elsewhere (ECHILD) is gone too, and its pid must not be
            // signalled again.
            running.retain(|&(pid, _)| {
                matches!(
                    waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::StillAlive)
                )
            });
        }
        for &(pid, group) in &live {
            // A group goes whatever its leader did: the leader's forked
            // workers may outlive it (as `ManagedProcess::stop` does).
            if group || running.contains(&(pid, group)) {
                signal_child(pid, group, Signal::SIGKILL);
            }
        }
        std::process::exit(130);
    })
}

/// Signals a child, or the whole process group it leads.
fn signal_child(pid: i32, group: bool, signal: Signal) {
    // A negative pid addresses the process group the child leads.
    let _ = kill(Pid::from_raw(if group { -pid } else { pid }), signal);
}

/// A running child process, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    /// Signals go to the child's whole process group (it was started as the
    /// leader of a new one): for servers that fork workers, such as vLLM's
    /// engine core, which must not outlive the testbed.
    group: bool,
    /// Addresses from the process's `LISTENING key=addr ...` line.
    pub addrs: HashMap<String, SocketAddr>,
}

impl ManagedProcess {
    /// Starts `command` with stdout and stderr in `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, command: Command, log_dir: &Path) -> Result<Self, TestbedError> {
        Self::spawn_with(name, command, log_dir, false)
    }

    /// Like [`ManagedProcess::spawn`], in a new process group that is
    /// signalled as a whole: stopping it stops the workers it forked too.
    pub fn spawn_group(
        name: &str,
        mut command: Command,
        log_dir: &Path,
    ) -> Result<Self, TestbedError> {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        Self::spawn_with(name, command, log_dir, true)
    }

    fn spawn_with(
        name: &str,
        mut command: Command,
        log_dir: &Path,
        group: bool,
    ) -> Result<Self, TestbedError> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = File::create(&log_path).map_err(|e| TestbedError::io(&log_path, e))?;
        let err_log = log
            .try_clone()
            .map_err(|e| TestbedError::io(&log_path, e))?;
        command.stdout(log).stderr(err_log).stdin(Stdio::null());
        let child = command.spawn().map_err(|e| TestbedError::Spawn {
            name: name.to_owned(),
            source: e,
        })?;
        track(child.id(), group);
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path,
            group,
            addrs: HashMap::new(),
        })
    }

    /// Starts `command` and waits for its `LISTENING` line.
    pub fn spawn_listening(
        name: &str,
        mut command: Command,
        log_dir: &Path,
        timeout: Duration,
    ) -> Result<Self, TestbedError> {
        let log_path = log_dir.join(format!("{name}.log"));
        let mut log = File::create(&log_path).map_err(|e| TestbedError::io(&log_path, e))?;
        let err_log = log
            .try_clone()
            .map_err(|e| TestbedError::io(&log_path, e))?;
        command
            .stdout(Stdio::piped())
            .stderr(err_log)
            .stdin(Stdio::null());
        let mut child = command.spawn().map_err(|e| TestbedError::Spawn {
            name: name.to_owned(),
            source: e,
        })?;
        track(child.id(), false);
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        // Copy stdout to the log for the whole life of the process, handing
        // the LISTENING line to the starter on the way.
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if line.starts_with("LISTENING")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line);
                }
            }
        });
        let mut process = Self {
            name: name.to_owned(),
            child,
            log_path,
            group: false,
            addrs: HashMap::new(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    process.addrs = parse_listening(&line);
                    return Ok(process);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = process.child.try_wait() {
                        return Err(
                            process.failed(format!("exited with {status} before listening"))
                        );
                    }
                }
                Err(_) => return Err(process.failed("did not print LISTENING in time".into())),
            }
        }
    }

    pub fn addr(&self, key: &str) -> Result<SocketAddr, TestbedError> {
        self.addrs
            .get(key)
            .copied()
            .ok_or_else(|| TestbedError::Startup {
                name: self.name.clone(),
                reason: format!("no `{key}=` address in its LISTENING line"),
                log_tail: self.log_tail(),
            })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Resident memory of the process now, in bytes (`VmRSS` of
    /// `/proc/<pid>/status`); `None` once it has exited.
    pub fn resident_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// CPU time the process has used so far, user and system (`utime` +
    /// `stime` of `/proc/<pid>/stat`); `None` once it has exited. A group's
    /// forked workers are not counted: benchmarks sample single processes.
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = i32::try_from(self.child.id()).ok()?;
        cpu_time_of(procfs::process::Process::new(pid))
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub(crate) fn failed(&self, reason: String) -> TestbedError {
        TestbedError::Startup {
            name: self.name.clone(),
            reason,
            log_tail: self.log_tail(),
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.try_wait() {
            Ok(None) => true,
            Ok(Some(_)) => {
                untrack(self.child.id());
                false
            }
            Err(_) => false,
        }
    }

    pub fn signal(&self, signal: Signal) {
        signal_child(self.child.id() as i32, self.group, signal);
    }

    /// SIGKILL and reap: simulates a crash.
    pub fn kill_hard(&mut self) {
        if self.group {
            self.signal(Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        untrack(self.child.id());
    }

    /// SIGTERM, a grace period, then SIGKILL.
    pub fn stop(&mut self) {
        if self.is_running() {
            self.signal(Signal::SIGTERM);
            // vLLM shuts its engine core down on SIGTERM, which takes a moment.
            let grace = if self.group { 20 } else { 5 };
            let deadline = Instant::now() + Duration::from_secs(grace);
            while self.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if self.is_running() || self.group {
            // For a group: whatever the leader left behind goes too.
            self.kill_hard();
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn parse_listening(line: &str) -> HashMap<String, SocketAddr> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// CPU time this process (the caller) has used so far, user and system.
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time_of(procfs::process::Process::myself())
}

/// `utime` + `stime` of a process's `/proc/<pid>/stat`, clock ticks made a
/// duration; `None` when the process is gone or its stat unreadable.
fn cpu_time_of(process: procfs::ProcResult<procfs::process::Process>) -> Option<Duration> {
    let stat = process.ok()?.stat().ok()?;
    let ticks = stat.utime + stat.stime;
    Some(Duration::from_secs_f64(
        ticks as f64 / procfs::ticks_per_second() as f64,
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_listening;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn cpu_time_grows_while_the_process_works_and_ends_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut busy = Command::new("sh");
        busy.args(["-c", "while :; do :; done"]);
        let mut process = super::ManagedProcess::spawn("busy", busy, dir.path()).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut used = Duration::ZERO;
        while used < Duration::from_millis(200) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            used = process.cpu_time().expect("running process has a CPU time");
        }
        assert!(used >= Duration::from_millis(200), "only {used:?} of CPU");
        let start = super::own_cpu_time().expect("own CPU time");
        let mut spins = 0u64;
        while super::own_cpu_time().expect("own CPU time") <= start && Instant::now() < deadline {
            spins = std::hint::black_box(spins + 1);
        }
        assert!(
            super::own_cpu_time().expect("own CPU time") > start,
            "own time did not grow"
        );
        process.stop();
        assert_eq!(
            process.cpu_time(),
            None,
            "a stopped process reads no CPU time"
        );
    }

    #[test]
    fn listening_line() {
        let m = parse_listening("LISTENING grpc=127.0.0.1:5000 admin=127.0.0.1:5001 junk");
        assert_eq!(m["grpc"].port(), 5000);
        assert_eq!(m["admin"].port(), 5001);
        assert_eq!(m.len(), 2);
    }
}
