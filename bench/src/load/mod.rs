//! The load generator: one HTTP endpoint driven open-loop at a fixed rate or
//! closed-loop at saturation, with latencies in an HDR histogram.

mod closed_loop;
mod endpoint;
mod open_loop;
mod progress;
mod recipe;
mod recorder;

pub use closed_loop::{ClosedLoop, run_closed_loop};
pub use endpoint::{Endpoint, Outcome, load_client};
pub use open_loop::{OpenLoop, run_open_loop};
pub use progress::PhaseProgress;
pub use recipe::RequestRecipe;
pub use recorder::{PhaseRecorder, PhaseSummary};

#[cfg(test)]
mod tests;
