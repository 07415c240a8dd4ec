//! What a request brings to the queue.

/// One request asking a pool for room.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    pub tenant: String,
    /// Fair-share weight: a tenant of weight 2 gets twice the token service
    /// of a weight-1 tenant when both are backlogged.
    pub weight: f64,
    /// Strict band; higher is admitted first when bands are on.
    pub priority: u32,
    /// Prompt estimate.
    pub est_input: u64,
    /// Reserved `max_tokens`.
    pub est_output: u64,
}

/// A weight that cannot divide a cost into nonsense: zero, negative or
/// non-finite weights count as 1.
pub(super) fn usable_weight(weight: f64) -> f64 {
    if weight.is_finite() && weight > 0.0 {
        weight
    } else {
        1.0
    }
}
