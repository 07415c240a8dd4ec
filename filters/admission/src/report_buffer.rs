//! Usage reports wait here for the next flush, so one Envoy worker sends
//! one `CompleteBatch` call per flush interval instead of one `Complete` per
//! request: under load that halves the gRPC calls a request costs.
//!
//! The flush runs from the root context's tick, so the call belongs to the
//! root and its answer reaches the root (the SDK routes an answer to the
//! context that was active when the call was made, whatever the effective
//! context). A full buffer is sent at once from wherever it filled, so
//! memory stays bounded however fast requests end.

/// Most reports in one call.
pub const MAX_REPORTS_PER_CALL: usize = 128;

#[derive(Debug)]
pub struct ReportBuffer<T> {
    pending: Vec<T>,
    max: usize,
}

impl<T> Default for ReportBuffer<T> {
    fn default() -> Self {
        Self::with_max(MAX_REPORTS_PER_CALL)
    }
}

impl<T> ReportBuffer<T> {
    pub fn with_max(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            max: max.max(1),
        }
    }

    /// Buffers `report`; returns the batch to send right now when it is full.
    pub fn push(&mut self, report: T) -> Option<Vec<T>> {
        self.pending.push(report);
        (self.pending.len() >= self.max).then(|| std::mem::take(&mut self.pending))
    }

    /// Everything buffered, for the flush; `None` when nothing waits.
    pub fn drain(&mut self) -> Option<Vec<T>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_wait_for_the_flush_in_order() {
        let mut b = ReportBuffer::with_max(10);
        assert_eq!(b.drain(), None);
        for i in 0..3 {
            assert_eq!(b.push(i), None);
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.drain(), Some(vec![0, 1, 2]));
        assert!(b.is_empty());
        assert_eq!(b.drain(), None);
    }

    #[test]
    fn a_full_buffer_leaves_at_once_and_starts_over() {
        let mut b = ReportBuffer::with_max(3);
        assert_eq!(b.push('a'), None);
        assert_eq!(b.push('b'), None);
        assert_eq!(b.push('c'), Some(vec!['a', 'b', 'c']));
        assert!(b.is_empty());
        assert_eq!(b.push('d'), None);
        assert_eq!(b.drain(), Some(vec!['d']));
    }

    #[test]
    fn the_default_bound_holds_and_zero_means_one() {
        let mut b = ReportBuffer::default();
        let sent: usize = (0..1_000).filter_map(|i| b.push(i)).map(|v| v.len()).sum();
        assert_eq!(sent + b.len(), 1_000);
        assert!(b.len() < MAX_REPORTS_PER_CALL);
        let mut one = ReportBuffer::with_max(0);
        assert_eq!(one.push(7), Some(vec![7]));
    }
}
