//! A throwaway redis-server for tests: no persistence, a free loopback
//! port, stopped on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A Redis server on a free loopback port, stopped on drop. Tests that need
/// it fail (never skip) when `redis-server` is not installed.
pub struct RedisServer {
    child: Child,
    pub url: String,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// `redis-server` from the PATH.
    pub fn start() -> Self {
        Self::start_binary("redis-server")
    }

    /// The given redis-server binary.
    pub fn start_binary(binary: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(binary)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "{binary} is not installed: the Redis backend tests need it \
                     (apt-get install redis-server); they do not skip"
                ),
                Err(e) => panic!("cannot start redis-server: {e}"),
            };
            if wait_for_pong(port, Duration::from_secs(5)) {
                return Self {
                    child,
                    url: format!("redis://127.0.0.1:{port}/"),
                    port,
                    _dir: dir,
                };
            }
            // Port taken between bind and start: try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not come up on a free port");
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn wait_for_pong(port: u16, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 7];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read_exact(&mut buf).is_ok()
                && &buf == b"+PONG\r\n"
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
