//! Continuous-batching scheduler: a FCFS waiting queue and a running batch bounded by
//! `max_num_seqs` and by KV blocks. Pure state and arithmetic; the engine loop owns the clock.
//!
//! One step: admit waiting sequences while there is room ([`Scheduler::begin_step`]), let the
//! step's time pass, then every running sequence emits one token ([`Scheduler::finish_step`]).
//! A newly admitted sequence pays its prefill (uncached prompt tokens) inside its first step,
//! which is also the step that produces its first token, so TTFT = queueing + prefill + step.

use crate::config::MockConfig;
use crate::kv_cache::{BlockId, KvCache};
use crate::metrics::{EngineStats, FinishReason, SchedulerGauges};
use crate::prefix_cache::BlockHash;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SequenceId(u64);

/// What a request asks the engine to run.
#[derive(Debug, Clone)]
pub struct NewSequence {
    pub prompt_len: usize,
    /// Hashes of the prompt's full blocks (see [`crate::prefix_cache`]).
    pub block_hashes: Vec<BlockHash>,
    pub max_tokens: u32,
    /// Whether the prompt may be served from cached blocks. vLLM skips the lookup for requests
    /// that want prompt logprobs, which need every prompt position computed; their blocks are
    /// still cached for others.
    pub read_prefix_cache: bool,
}

/// What the engine tells the request about its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceEvent {
    /// Admitted into the running batch, with this many prompt tokens served from the cache.
    Scheduled { cached_tokens: usize },
    /// One generated token; `last` is set on the final one, after which the channel closes.
    Token { index: u32, last: bool },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error(
        "request needs {needed} KV blocks but the cache only has {capacity}; \
         reduce the prompt or max_tokens"
    )]
    ExceedsKvCapacity { needed: usize, capacity: usize },
    #[error("the engine is shutting down")]
    Stopped,
}

#[derive(Debug)]
struct Sequence {
    id: SequenceId,
    request: NewSequence,
    arrival: Instant,
    events: UnboundedSender<SequenceEvent>,
    blocks: Vec<BlockId>,
    generated: u32,
    awaiting_prefill: bool,
}

#[derive(Debug)]
pub struct Scheduler {
    config: Arc<MockConfig>,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    kv: KvCache,
    stats: EngineStats,
    next_id: u64,
    stopped: bool,
}

impl Scheduler {
    pub fn new(config: Arc<MockConfig>) -> Self {
        let kv = KvCache::new(config.num_gpu_blocks);
        Self {
            config,
            waiting: VecDeque::new(),
            running: Vec::new(),
            kv,
            stats: EngineStats::default(),
            next_id: 0,
            stopped: false,
        }
    }

    /// Queues a sequence. One that could never fit the KV cache is refused here rather than
    /// blocking the head of the queue forever.
    pub fn enqueue(
        &mut self,
        request: NewSequence,
        arrival: Instant,
        events: UnboundedSender<SequenceEvent>,
    ) -> Result<SequenceId, SubmitError> {
        if self.stopped {
            return Err(SubmitError::Stopped);
        }
        let needed = self.blocks_needed(&request);
        if needed > self.kv.capacity() {
            return Err(SubmitError::ExceedsKvCapacity {
                needed,
                capacity: self.kv.capacity(),
            });
        }
        let id = SequenceId(self.next_id);
        self.next_id += 1;
        self.waiting.push_back(Sequence {
            id,
            request,
            arrival,
            events,
            blocks: Vec::new(),
            generated: 0,
            awaiting_prefill: true,
        });
        Ok(id)
    }

    /// Removes a sequence wherever it is and frees its blocks. Returns whether it was found
    /// (a sequence that already finished is not).
    pub fn cancel(&mut self, id: SequenceId) -> bool {
        if let Some(pos) = self.waiting.iter().position(|s| s.id == id) {
            self.waiting.remove(pos);
        } else if let Some(pos) = self.running.iter().position(|s| s.id == id) {
            let sequence = self.running.swap_remove(pos);
            self.kv.release(&sequence.blocks);
        } else {
            return false;
        }
        // A client that goes away is not a finished request to vLLM's metrics: no
        // `finished_reason="abort"` count, no latency sample (seen on vLLM 0.32).
        true
    }

    /// Admits what fits and returns how long the coming step takes, or `None` when idle.
    pub fn begin_step(&mut self) -> Option<Duration> {
        let prefill_tokens = self.admit_waiting();
        if self.running.is_empty() {
            return None;
        }
        Some(
            self.config.decode_step_time(self.running.len())
                + self.config.prefill_time(prefill_tokens),
        )
    }

    /// Ends the step started by [`Self::begin_step`]: one token for every running sequence.
    pub fn finish_step(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.running.len() {
            let sequence = &mut self.running[index];
            if sequence.awaiting_prefill {
                sequence.awaiting_prefill = false;
                let full_blocks = sequence.request.block_hashes.len();
                self.kv.publish(
                    &sequence.blocks[..full_blocks],
                    &sequence.request.block_hashes,
                );
                self.stats
                    .time_to_first_token
                    .observe(now - sequence.arrival);
            }
            let token = sequence.generated;
            sequence.generated += 1;
            let last = sequence.generated >= sequence.request.max_tokens;
            self.stats.generation_tokens += 1;
            let delivered = sequence
                .events
                .send(SequenceEvent::Token { index: token, last })
                .is_ok();
            if last || !delivered {
                let done = self.running.swap_remove(index);
                self.kv.release(&done.blocks);
                if delivered {
                    self.stats.e2e_request_latency.observe(now - done.arrival);
                    self.stats.record_finished(FinishReason::Length);
                }
            } else {
                index += 1;
            }
        }
    }

    /// Drops every sequence, which closes their event channels so that open streams end, and
    /// refuses new ones.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.waiting.clear();
        for sequence in std::mem::take(&mut self.running) {
            self.kv.release(&sequence.blocks);
        }
    }

    pub fn gauges(&self) -> SchedulerGauges {
        SchedulerGauges {
            running: self.running.len(),
            waiting: self.waiting.len(),
            kv_cache_usage: self.kv.usage(),
        }
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn stats_mut(&mut self) -> &mut EngineStats {
        &mut self.stats
    }

    pub fn reset_prefix_cache(&mut self) {
        self.kv.reset_prefix_cache();
    }

    pub fn cached_blocks(&self) -> usize {
        self.kv.cached_blocks()
    }

    /// The mock has no preemption, so a sequence reserves KV for its whole output up front;
    /// vLLM grows allocations per step and preempts under pressure instead.
    fn blocks_needed(&self, request: &NewSequence) -> usize {
        (request.prompt_len + request.max_tokens as usize).div_ceil(self.config.block_size)
    }

    /// FCFS admission: stops at the first sequence that does not fit, like vLLM's FCFS policy.
    /// Returns the prompt tokens that must be prefilled in this step.
    fn admit_waiting(&mut self) -> usize {
        let mut prefill_tokens = 0;
        while self.running.len() < self.config.max_num_seqs {
            let Some(head) = self.waiting.front() else {
                break;
            };
            // The last prompt token is always recomputed to produce logits, so at most
            // `prompt_len - 1` tokens can come from the cache, in whole blocks.
            let cacheable = head.request.prompt_len.saturating_sub(1) / self.config.block_size;
            let lookup_len = if head.request.read_prefix_cache {
                cacheable.min(head.request.block_hashes.len())
            } else {
                0
            };
            let hits = self
                .kv
                .cached_prefix(&head.request.block_hashes[..lookup_len]);
            let fresh = self.blocks_needed(&head.request) - hits.len();
            let Some(blocks) = self.kv.allocate(&hits, fresh) else {
                break;
            };
            let Some(mut sequence) = self.waiting.pop_front() else {
                break;
            };
            let cached_tokens = hits.len() * self.config.block_size;
            let prompt_len = sequence.request.prompt_len;
            self.stats.prompt_tokens += prompt_len as u64;
            // A skipped lookup is no query, as in vLLM's prefix-cache stats.
            if sequence.request.read_prefix_cache {
                self.stats.prefix_cache_queries += prompt_len as u64;
                self.stats.prefix_cache_hits += cached_tokens as u64;
            }
            prefill_tokens += prompt_len - cached_tokens;
            sequence.blocks = blocks;
            if sequence
                .events
                .send(SequenceEvent::Scheduled { cached_tokens })
                .is_err()
            {
                self.kv.release(&sequence.blocks);
                continue;
            }
            self.running.push(sequence);
        }
        prefill_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix_cache::{CacheScope, block_hashes};
    use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

    fn config(max_num_seqs: usize, num_gpu_blocks: usize) -> Arc<MockConfig> {
        Arc::new(MockConfig {
            max_num_seqs,
            num_gpu_blocks,
            block_size: 4,
            prefill_us_per_token: 10,
            decode_base_us: 1000,
            decode_us_per_seq: 100,
            ..MockConfig::default()
        })
    }

    fn sequence(prompt_len: u32, max_tokens: u32, salt: Option<&str>) -> NewSequence {
        let tokens: Vec<u32> = (0..prompt_len).collect();
        NewSequence {
            prompt_len: tokens.len(),
            block_hashes: block_hashes(
                &tokens,
                4,
                CacheScope {
                    model: "m",
                    cache_salt: salt,
                },
            ),
            max_tokens,
            read_prefix_cache: true,
        }
    }

    fn submit(
        scheduler: &mut Scheduler,
        request: NewSequence,
    ) -> (SequenceId, UnboundedReceiver<SequenceEvent>) {
        let (tx, rx) = unbounded_channel();
        let id = scheduler
            .enqueue(request, Instant::now(), tx)
            .expect("fits");
        (id, rx)
    }

    fn drain(rx: &mut UnboundedReceiver<SequenceEvent>) -> Vec<SequenceEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn running_batch_is_capped_and_the_rest_waits_fcfs() {
        let mut s = Scheduler::new(config(2, 100));
        let mut receivers: Vec<_> = (0..3)
            .map(|_| submit(&mut s, sequence(8, 2, None)).1)
            .collect();
        // Step 1: two admitted, each prefills 8 tokens.
        assert_eq!(
            s.begin_step(),
            Some(Duration::from_micros(1000 + 200 + 160))
        );
        assert_eq!((s.gauges().running, s.gauges().waiting), (2, 1));
        s.finish_step(Instant::now());
        assert!(drain(&mut receivers[2]).is_empty(), "third is still queued");
        // Step 2: the first two finish.
        s.begin_step();
        s.finish_step(Instant::now());
        assert_eq!(
            drain(&mut receivers[0]),
            [
                SequenceEvent::Scheduled { cached_tokens: 0 },
                SequenceEvent::Token {
                    index: 0,
                    last: false
                },
                SequenceEvent::Token {
                    index: 1,
                    last: true
                },
            ]
        );
        // Step 3: the third is admitted once slots are free.
        s.begin_step();
        assert_eq!((s.gauges().running, s.gauges().waiting), (1, 0));
    }

    #[test]
    fn kv_capacity_limits_admission_too() {
        // Each request needs (8 + 4) / 4 = 3 blocks; 5 blocks fit only one at a time.
        let mut s = Scheduler::new(config(8, 5));
        let _a = submit(&mut s, sequence(8, 4, None));
        let _b = submit(&mut s, sequence(8, 4, None));
        s.begin_step();
        assert_eq!((s.gauges().running, s.gauges().waiting), (1, 1));
        assert_eq!(s.gauges().kv_cache_usage, 3.0 / 5.0);
    }

    #[test]
    fn oversized_requests_are_refused_at_enqueue() {
        let mut s = Scheduler::new(config(8, 2));
        let (tx, _rx) = unbounded_channel();
        assert_eq!(
            s.enqueue(sequence(8, 4, None), Instant::now(), tx),
            Err(SubmitError::ExceedsKvCapacity {
                needed: 3,
                capacity: 2
            })
        );
    }

    #[test]
    fn repeated_prompt_hits_the_cache_but_never_fully() {
        let mut s = Scheduler::new(config(8, 100));
        let (_, mut first) = submit(&mut s, sequence(12, 1, Some("a")));
        s.begin_step();
        s.finish_step(Instant::now());
        assert_eq!(
            drain(&mut first)[0],
            SequenceEvent::Scheduled { cached_tokens: 0 }
        );

        // 12 tokens = 3 full blocks, but the last token is always recomputed: 2 blocks cached.
        let (_, mut same) = submit(&mut s, sequence(12, 1, Some("a")));
        let (_, mut other_salt) = submit(&mut s, sequence(12, 1, Some("b")));
        let (_, mut no_salt) = submit(&mut s, sequence(12, 1, None));
        // Prefill: 4 uncached tokens for the hit, 12 each for the misses.
        assert_eq!(
            s.begin_step(),
            Some(Duration::from_micros(1000 + 300 + 280))
        );
        assert_eq!(
            drain(&mut same)[0],
            SequenceEvent::Scheduled { cached_tokens: 8 }
        );
        assert_eq!(
            drain(&mut other_salt)[0],
            SequenceEvent::Scheduled { cached_tokens: 0 }
        );
        assert_eq!(
            drain(&mut no_salt)[0],
            SequenceEvent::Scheduled { cached_tokens: 0 }
        );
        assert_eq!(s.stats().prefix_cache_hits, 8);
        assert_eq!(s.stats().prefix_cache_queries, 48);
    }

    #[test]
    fn a_sequence_that_skips_the_cache_reads_none_but_still_fills_it() {
        let mut s = Scheduler::new(config(8, 100));
        let (_, mut first) = submit(
            &mut s,
            NewSequence {
                read_prefix_cache: false,
                ..sequence(12, 1, Some("a"))
            },
        );
        s.begin_step();
        s.finish_step(Instant::now());
        assert_eq!(
            drain(&mut first)[0],
            SequenceEvent::Scheduled { cached_tokens: 0 }
        );
        let (_, mut skipping) = submit(
            &mut s,
            NewSequence {
                read_prefix_cache: false,
                ..sequence(12, 1, Some("a"))
            },
        );
        s.begin_step();
        s.finish_step(Instant::now());
        assert_eq!(
            drain(&mut skipping)[0],
            SequenceEvent::Scheduled { cached_tokens: 0 }
        );
        assert_eq!(s.stats().prefix_cache_queries, 0, "no lookup, no query");
        let (_, mut reading) = submit(&mut s, sequence(12, 1, Some("a")));
        s.begin_step();
        assert_eq!(
            drain(&mut reading)[0],
            SequenceEvent::Scheduled { cached_tokens: 8 },
            "the skipping sequences published their blocks"
        );
    }

    #[test]
    fn cancel_frees_the_slot_and_blocks_at_once() {
        let mut s = Scheduler::new(config(1, 100));
        let (running, _rx1) = submit(&mut s, sequence(8, 10, None));
        let (_, mut queued) = submit(&mut s, sequence(8, 10, None));
        s.begin_step();
        assert_eq!((s.gauges().running, s.gauges().waiting), (1, 1));
        assert!(s.cancel(running));
        assert_eq!(s.gauges().running, 0);
        assert_eq!(s.gauges().kv_cache_usage, 0.0);
        s.finish_step(Instant::now());
        s.begin_step();
        assert_eq!(
            drain(&mut queued)[0],
            SequenceEvent::Scheduled { cached_tokens: 0 }
        );
        assert!(!s.cancel(running), "already gone");
        // vLLM counts no `abort` for a client that went away.
        assert_eq!(s.stats().finished(FinishReason::Abort), 0);
    }

    #[test]
    fn dropped_receiver_is_reaped_on_the_next_token() {
        let mut s = Scheduler::new(config(4, 100));
        let (_, rx) = submit(&mut s, sequence(8, 10, None));
        s.begin_step();
        drop(rx);
        s.finish_step(Instant::now());
        assert_eq!(s.gauges().running, 0);
        assert_eq!(s.gauges().kv_cache_usage, 0.0);
    }
}
