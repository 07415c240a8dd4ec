//! A progress bar on stderr for one timed phase, so stdout keeps only the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

/// Shows elapsed time against the phase length and the requests completed.
#[derive(Debug, Clone)]
pub struct PhaseProgress {
    bar: ProgressBar,
    completed: Arc<AtomicU64>,
}

impl PhaseProgress {
    pub fn new(label: &str, length: Duration) -> Self {
        let bar = ProgressBar::with_draw_target(
            Some(u64::try_from(length.as_millis()).unwrap_or(u64::MAX)),
            ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:<40} [{bar:30}] {elapsed:>3} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_owned());
        Self {
            bar,
            completed: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn completed_one(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Redraws every 200 ms until the returned task is aborted.
    pub fn tick_from(&self, start: Instant) -> tokio::task::JoinHandle<()> {
        let progress = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(200));
            loop {
                ticker.tick().await;
                progress.draw(start);
            }
        })
    }

    fn draw(&self, start: Instant) {
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.bar.set_position(ms);
        self.bar.set_message(format!(
            "{} responses",
            self.completed.load(Ordering::Relaxed)
        ));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
