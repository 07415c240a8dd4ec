//! `gateway-probe [--bearer-env NAME] [--timeout-ms N] URL`
//!
//! The health check of every image the project ships (`HEALTHCHECK` in
//! `deploy/docker/Dockerfile`). The runtime images are distroless, without a
//! shell or curl, so the probe is a binary of its own: it GETs the URL and
//! exits 0 on a 2xx answer, 1 otherwise, printing why on stderr (Docker keeps
//! the last lines in `docker inspect`).
//!
//! `--bearer-env NAME` sends `Authorization: Bearer $NAME`, so a probe of an
//! authenticated readiness route reads the token from the container's
//! environment instead of from its command line, which `docker inspect`
//! shows to anyone.

use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, PartialEq)]
struct Args {
    url: String,
    bearer_env: Option<String>,
    timeout: Duration,
}

const USAGE: &str = "usage: gateway-probe [--bearer-env NAME] [--timeout-ms N] URL";

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut url = None;
    let mut bearer_env = None;
    let mut timeout = Duration::from_secs(2);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bearer-env" => bearer_env = Some(args.next().ok_or("--bearer-env needs a name")?),
            "--timeout-ms" => {
                let value = args.next().ok_or("--timeout-ms needs a value")?;
                let ms: u64 = value
                    .parse()
                    .map_err(|_| format!("--timeout-ms: not a number: {value}"))?;
                timeout = Duration::from_millis(ms);
            }
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            _ if url.is_some() => return Err("one URL only".into()),
            _ => url = Some(arg),
        }
    }
    Ok(Args {
        url: url.ok_or("a URL is required")?,
        bearer_env,
        timeout,
    })
}

fn probe(args: &Args) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(args.timeout))
        .build()
        .into();
    let mut request = agent.get(&args.url);
    if let Some(name) = &args.bearer_env {
        let token = std::env::var(name).map_err(|_| format!("${name} is not set"))?;
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    match request.call() {
        Ok(response) => Ok(response.status().as_u16()),
        Err(ureq::Error::StatusCode(status)) => Err(format!("{}: HTTP {status}", args.url)),
        Err(error) => Err(format!("{}: {error}", args.url)),
    }
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("gateway-probe: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match probe(&args) {
        Ok(status) => {
            println!("{}: HTTP {status}", args.url);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("gateway-probe: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags_and_refuses_mistakes() {
        assert_eq!(
            args(&["--bearer-env", "T", "--timeout-ms", "500", "http://x/"]),
            Ok(Args {
                url: "http://x/".into(),
                bearer_env: Some("T".into()),
                timeout: Duration::from_millis(500),
            })
        );
        assert!(args(&[]).is_err());
        assert!(args(&["--timeout-ms", "soon", "http://x/"]).is_err());
        assert!(args(&["--verbose", "http://x/"]).is_err());
        assert!(args(&["http://x/", "http://y/"]).is_err());
    }

    /// One-shot HTTP server answering `status`; returns the request it read.
    fn serve_once(status: &str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ready", listener.local_addr().unwrap());
        let status = status.to_string();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = vec![0u8; 4096];
            let n = stream.read(&mut request).unwrap();
            write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (url, handle)
    }

    #[test]
    fn two_hundred_is_healthy_and_carries_the_token() {
        let (url, server) = serve_once("200 OK");
        let name = "GATEWAY_PROBE_TEST_TOKEN";
        #[allow(unsafe_code)]
        // SAFETY: no other test reads or writes this variable.
        unsafe {
            std::env::set_var(name, "s3cret")
        };
        let parsed = Args {
            url,
            bearer_env: Some(name.into()),
            timeout: Duration::from_secs(2),
        };
        assert_eq!(probe(&parsed), Ok(200));
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("get /ready "), "{request}");
        assert!(
            request.contains("authorization: bearer s3cret"),
            "{request}"
        );
    }

    #[test]
    fn errors_and_silence_are_unhealthy() {
        let (url, server) = serve_once("503 Service Unavailable");
        let parsed = Args {
            url,
            bearer_env: None,
            timeout: Duration::from_secs(2),
        };
        let error = probe(&parsed).unwrap_err();
        assert!(error.contains("503"), "{error}");
        server.join().unwrap();

        // Nothing listening.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        assert!(
            probe(&Args {
                url,
                bearer_env: None,
                timeout: Duration::from_secs(2)
            })
            .is_err()
        );
        // A missing token variable is an error, not an unauthenticated probe.
        assert!(
            probe(&Args {
                url: "http://127.0.0.1:9/".into(),
                bearer_env: Some("GATEWAY_PROBE_UNSET_VARIABLE".into()),
                timeout: Duration::from_secs(1)
            })
            .unwrap_err()
            .contains("not set")
        );
    }
}
