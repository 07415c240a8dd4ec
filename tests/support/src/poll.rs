//! Waiting for something another process or task does.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const STEP: Duration = Duration::from_millis(10);

/// Checks `check` until it holds (true) or `timeout` passes (false); it is
/// checked once more at the deadline, so a slow machine gets the last word.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if check() {
            return true;
        }
        std::thread::sleep(STEP);
    }
    check()
}

/// [`eventually`] for an async check, sleeping on the Tokio timer.
pub async fn eventually_async<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(STEP).await;
    }
    check().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_once_late_or_never() {
        assert!(eventually(Duration::ZERO, || true));
        let start = Instant::now();
        assert!(eventually(Duration::from_secs(5), || start.elapsed()
            > Duration::from_millis(50)));
        assert!(!eventually(Duration::from_millis(60), || false));
    }
}
