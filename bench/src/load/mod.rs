//! The load generator: a [`Target`] (an HTTP endpoint, or the admission
//! benchmark's gRPC call pair) driven open-loop at a fixed rate or
//! closed-loop at saturation, into a [`Record`] (latencies in an HDR
//! histogram, outcomes counted).

mod closed_loop;
mod endpoint;
mod open_loop;
mod progress;
mod recipe;
mod recorder;
mod target;

pub use closed_loop::{ClosedLoop, run_closed_loop};
pub use endpoint::{Endpoint, Outcome, load_client};
pub use open_loop::{OpenLoop, run_open_loop};
pub use progress::PhaseProgress;
pub use recipe::RequestRecipe;
pub use recorder::{PhaseRecorder, PhaseSummary};
pub use target::{Record, Target};

#[cfg(test)]
mod tests;
