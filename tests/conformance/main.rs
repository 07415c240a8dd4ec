//! The conformance suite: one set of test bodies, run through the whole
//! gateway (real Envoy, the built filters, ratelimit-service) against two
//! upstreams: mock-vllm and a real vLLM on CPU (`tools/vllm`). Whatever the
//! mock does that vLLM does not fails here, so the mock stays faithful.
//!
//! Its own harness (libtest-mimic) because each upstream is started once for
//! all its cases (a vLLM start takes tens of seconds) and must be stopped
//! before the process exits, which statics in the default harness never are.
//! Cases run one at a time: they share an upstream and its prefix cache.
//!
//! `cargo test -p gateway-e2e --test conformance -- [--list] [FILTER]`;
//! names are `<upstream>::<case>`, e.g. `vllm::chat_stream_framing`.

mod cases;
mod upstream;

use std::sync::Arc;

use libtest_mimic::{Arguments, Trial};

use upstream::{Suite, Upstream};

fn main() {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let suite = Arc::new(Suite::default());
    let mut trials = Vec::new();
    for upstream in Upstream::ALL {
        for &(name, case) in cases::ALL {
            let suite = suite.clone();
            trials.push(Trial::test(
                format!("{}::{name}", upstream.name()),
                move || {
                    let gateway = suite.gateway(upstream)?;
                    case(gateway);
                    Ok(())
                },
            ));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop every upstream before exiting: `exit` runs no destructors.
    suite.shutdown();
    conclusion.exit();
}
