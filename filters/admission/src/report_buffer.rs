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
/// Most encoded bytes in one call. Reports of tenants that log prompts carry
/// up to 64 KiB each: a batch is sent before it nears the gRPC message limit
/// (ratelimit-service accepts 16 MiB), since a refused batch would lose
/// every charge in it.
pub const MAX_BYTES_PER_CALL: usize = 1024 * 1024;

#[derive(Debug)]
pub struct ReportBuffer<T> {
    pending: Vec<T>,
    bytes: usize,
    max: usize,
    max_bytes: usize,
}

impl<T> Default for ReportBuffer<T> {
    fn default() -> Self {
        Self::with_max(MAX_REPORTS_PER_CALL, MAX_BYTES_PER_CALL)
    }
}

impl<T> ReportBuffer<T> {
    pub fn with_max(max: usize, max_bytes: usize) -> Self {
        Self {
            pending: Vec::new(),
            bytes: 0,
            max: max.max(1),
            max_bytes,
        }
    }

    /// Buffers `report` of `bytes` encoded bytes; returns the batch to send
    /// right now when it is full, by count or by size.
    pub fn push(&mut self, report: T, bytes: usize) -> Option<Vec<T>> {
        self.pending.push(report);
        self.bytes = self.bytes.saturating_add(bytes);
        (self.pending.len() >= self.max || self.bytes >= self.max_bytes).then(|| self.take())
    }

    /// Everything buffered, for the flush; `None` when nothing waits.
    pub fn drain(&mut self) -> Option<Vec<T>> {
        (!self.pending.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::take(&mut self.pending)
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
        let mut b = ReportBuffer::with_max(10, 1000);
        assert_eq!(b.drain(), None);
        for i in 0..3 {
            assert_eq!(b.push(i, 10), None);
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.drain(), Some(vec![0, 1, 2]));
        assert!(b.is_empty());
        assert_eq!(b.drain(), None);
    }

    #[test]
    fn a_full_buffer_leaves_at_once_and_starts_over() {
        let mut b = ReportBuffer::with_max(3, 1000);
        assert_eq!(b.push('a', 1), None);
        assert_eq!(b.push('b', 1), None);
        assert_eq!(b.push('c', 1), Some(vec!['a', 'b', 'c']));
        assert!(b.is_empty());
        assert_eq!(b.push('d', 1), None);
        assert_eq!(b.drain(), Some(vec!['d']));
    }

    #[test]
    fn big_reports_leave_before_the_batch_nears_the_message_limit() {
        let mut b = ReportBuffer::with_max(128, 100);
        assert_eq!(b.push(1, 60), None);
        assert_eq!(b.push(2, 60), Some(vec![1, 2]));
        // The count starts over with the batch.
        assert_eq!(b.push(3, 60), None);
        assert_eq!(b.drain(), Some(vec![3]));
        assert_eq!(b.push(4, 10), None);
    }

    #[test]
    fn the_default_bound_holds_and_zero_means_one() {
        let mut b = ReportBuffer::default();
        let sent: usize = (0..1_000)
            .filter_map(|i| b.push(i, 100))
            .map(|v| v.len())
            .sum();
        assert_eq!(sent + b.len(), 1_000);
        assert!(b.len() < MAX_REPORTS_PER_CALL);
        let mut one = ReportBuffer::with_max(0, 1000);
        assert_eq!(one.push(7, 1), Some(vec![7]));
    }
}
