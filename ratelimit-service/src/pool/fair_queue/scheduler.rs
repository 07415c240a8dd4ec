//! The scheduling core, free of locks and channels: who is waiting, in which
//! band, how much service each tenant has had, and who goes next.
//!
//! Fair mode follows the Virtual Token Counter of Sheng et al. (OSDI'24),
//! applied at admission time: every tenant has a counter of weighted token
//! service; the pool's next free slot goes to the head request of the
//! backlogged tenant with the smallest counter, whose counter is charged with
//! the request's estimated cost at once (so concurrent admissions see it) and
//! corrected when the real usage is known.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::stats::{TenantStats, WaitHistogram};
use super::ticket::usable_weight;
use super::{QueueError, QueueMode, SchedulingPolicy, Ticket};

pub(super) type TenantId = Arc<str>;

/// Half-life of the recent-service average that decides who may use the
/// reserve. Long enough to hold many requests of a light tenant (so one
/// burst of its own does not disqualify it), short enough that a tenant
/// turning heavy loses the reserve within seconds.
const RECENT_SERVICE_HALF_LIFE: Duration = Duration::from_secs(5);

/// A tenant is light, and may use the reserve, while its recent service is
/// below this fraction of the heaviest active tenant's. Tenants sharing a
/// saturated pool fairly have equal service, far from this line.
const LIGHT_SHARE: f64 = 0.5;

/// Weighted service with exponential decay: a rate, not a total, and unlike
/// the VTC counter it is never lifted, so it remembers who has been light.
#[derive(Debug, Clone, Copy)]
struct RecentService {
    value: f64,
    at: Instant,
}

impl RecentService {
    fn new(now: Instant) -> Self {
        Self {
            value: 0.0,
            at: now,
        }
    }

    fn at(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.value * (-age / RECENT_SERVICE_HALF_LIFE.as_secs_f64()).exp2()
    }

    fn add(&mut self, amount: f64, now: Instant) {
        self.value = (self.at(now) + amount).max(0.0);
        self.at = now;
    }
}

/// Where a waiting request sits, as returned by [`Scheduler::enqueue`].
#[derive(Debug, Clone)]
pub(super) struct Queued {
    pub seq: u64,
    pub tenant: TenantId,
    pub band: u32,
    pub enqueued_at: Instant,
}

/// A request that was just given room.
#[derive(Debug, Clone)]
pub(super) struct Admission {
    pub seq: u64,
    pub tenant: TenantId,
    /// Estimated cost charged to the tenant's counter (already normalised).
    pub cost: f64,
    pub weight: f64,
    pub waited: Duration,
}

/// Why a waiting request left without room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Withdrawal {
    TimedOut,
    Cancelled,
}

#[derive(Debug)]
struct Waiting {
    seq: u64,
    cost: f64,
    weight: f64,
    enqueued_at: Instant,
}

#[derive(Debug, Default)]
struct Band {
    backlogged: HashSet<TenantId>,
    /// Counter (before charge) of the last request admitted from the band:
    /// the band's virtual time, the floor for a tenant returning to an empty
    /// band.
    virtual_time: f64,
}

#[derive(Debug)]
struct TenantState {
    weight: f64,
    priority: u32,
    counter: f64,
    service: f64,
    recent: RecentService,
    queues: BTreeMap<u32, VecDeque<Waiting>>,
    queued: u32,
    in_flight: u32,
    admitted: u64,
    /// Admission stamp of this tenant's latest admission (0 = never).
    last_served: u64,
    rejected_full: u64,
    timed_out: u64,
    cancelled: u64,
    waits: WaitHistogram,
}

impl TenantState {
    fn new(weight: f64, priority: u32, now: Instant) -> Self {
        Self {
            weight,
            priority,
            counter: 0.0,
            service: 0.0,
            recent: RecentService::new(now),
            queues: BTreeMap::new(),
            queued: 0,
            in_flight: 0,
            admitted: 0,
            last_served: 0,
            rejected_full: 0,
            timed_out: 0,
            cancelled: 0,
            waits: WaitHistogram::default(),
        }
    }

    fn head_seq(&self, band: u32) -> u64 {
        self.queues
            .get(&band)
            .and_then(VecDeque::front)
            .map_or(u64::MAX, |w| w.seq)
    }
}

#[derive(Debug)]
pub(super) struct Scheduler {
    policy: SchedulingPolicy,
    tenants: HashMap<TenantId, TenantState>,
    bands: BTreeMap<u32, Band>,
    next_seq: u64,
    /// Counts admissions; stamps `last_served`.
    admissions: u64,
}

impl Scheduler {
    pub fn new(policy: SchedulingPolicy) -> Self {
        Self {
            policy,
            tenants: HashMap::new(),
            bands: BTreeMap::new(),
            next_seq: 0,
            admissions: 0,
        }
    }

    pub fn policy(&self) -> &SchedulingPolicy {
        &self.policy
    }

    /// New policy for requests enqueued from now on; waiting requests keep
    /// their band and estimated cost.
    pub fn set_policy(&mut self, policy: SchedulingPolicy) {
        self.policy = policy;
    }

    pub fn queued(&self) -> u32 {
        self.tenants.values().map(|t| t.queued).sum()
    }

    /// Puts a request at the back of its tenant's queue in its band.
    pub fn enqueue(
        &mut self,
        ticket: &Ticket,
        max_depth: u32,
        now: Instant,
    ) -> Result<Queued, QueueError> {
        let weight = usable_weight(ticket.weight);
        let band = if self.policy.priority_bands {
            ticket.priority
        } else {
            0
        };
        let cost = self.policy.token_cost(ticket.est_input, ticket.est_output) / weight;
        let floor = self.lift_floor(band, &ticket.tenant);
        let tenant = self.tenant_id(&ticket.tenant);
        let band_state = self.bands.entry(band).or_default();
        let state = self
            .tenants
            .entry(tenant.clone())
            .or_insert_with(|| TenantState::new(weight, ticket.priority, now));
        // Weight and priority follow the latest ticket so a registry reload
        // takes effect without losing the counter.
        state.weight = weight;
        state.priority = ticket.priority;
        if state.queued >= max_depth {
            state.rejected_full += 1;
            return Err(QueueError::QueueFull {
                queued: state.queued,
            });
        }
        if let Some(floor) = floor {
            // No banking: idle time earns nothing. A tenant starting to wait
            // in a band competes from where the band's backlog stands now.
            state.counter = state.counter.max(floor);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        state.queues.entry(band).or_default().push_back(Waiting {
            seq,
            cost,
            weight,
            enqueued_at: now,
        });
        state.queued += 1;
        band_state.backlogged.insert(tenant.clone());
        Ok(Queued {
            seq,
            tenant,
            band,
            enqueued_at: now,
        })
    }

    /// Takes the next request to admit, charging its tenant; `None` when
    /// nothing waits.
    pub fn admit_next(&mut self, now: Instant) -> Option<Admission> {
        let (band, tenant) = match self.policy.mode {
            QueueMode::Fair => self.fairest_head()?,
            QueueMode::Fifo => self.oldest_head()?,
        };
        self.take(band, tenant, now)
    }

    /// The reserve above the cap: admits the fairest waiting request of a
    /// *light* tenant, one whose weighted service lately is less than
    /// [`LIGHT_SHARE`] of the heaviest active tenant's. Always `None` in FIFO.
    ///
    /// The reserve may take a light tenant ahead of VTC's order, which is
    /// the point: a light tenant's requests arrive in random clusters, and
    /// under strict VTC the second one of a cluster waits for the heavy
    /// tenant's next turn. That cannot move the VTC bound between tenants
    /// competing for the pool: they have had similar service, so none of
    /// them is light. And a tenant flooding the pool never is.
    pub fn admit_next_light(&mut self, now: Instant) -> Option<Admission> {
        if self.policy.mode == QueueMode::Fifo {
            return None;
        }
        let heaviest = self
            .tenants
            .values()
            .filter(|t| t.queued > 0 || t.in_flight > 0)
            .map(|t| t.recent.at(now))
            .fold(0.0, f64::max);
        let (band, tenant) =
            self.fairest_head_where(|t| t.recent.at(now) < heaviest * LIGHT_SHARE)?;
        self.take(band, tenant, now)
    }

    /// Pops the head request of `tenant` in `band` and charges it.
    fn take(&mut self, band: u32, tenant: TenantId, now: Instant) -> Option<Admission> {
        let band_state = self.bands.get_mut(&band)?;
        let state = self.tenants.get_mut(&tenant)?;
        let queue = state.queues.get_mut(&band)?;
        let waiting = queue.pop_front()?;
        if queue.is_empty() {
            state.queues.remove(&band);
            band_state.backlogged.remove(&tenant);
        }
        band_state.virtual_time = band_state.virtual_time.max(state.counter);
        state.counter += waiting.cost;
        state.service += waiting.cost;
        state.recent.add(waiting.cost, now);
        state.queued -= 1;
        state.in_flight += 1;
        state.admitted += 1;
        self.admissions += 1;
        state.last_served = self.admissions;
        let waited = now.saturating_duration_since(waiting.enqueued_at);
        state.waits.record(waited);
        Some(Admission {
            seq: waiting.seq,
            tenant,
            cost: waiting.cost,
            weight: waiting.weight,
            waited,
        })
    }

    /// Removes a waiting request; false when it is no longer waiting (it was
    /// admitted).
    pub fn withdraw(&mut self, queued: &Queued, why: Withdrawal) -> bool {
        let Some(state) = self.tenants.get_mut(&queued.tenant) else {
            return false;
        };
        let Some(queue) = state.queues.get_mut(&queued.band) else {
            return false;
        };
        let Some(pos) = queue.iter().position(|w| w.seq == queued.seq) else {
            return false;
        };
        queue.remove(pos);
        if queue.is_empty() {
            state.queues.remove(&queued.band);
            if let Some(band) = self.bands.get_mut(&queued.band) {
                band.backlogged.remove(&queued.tenant);
            }
        }
        state.queued -= 1;
        match why {
            Withdrawal::TimedOut => state.timed_out += 1,
            Withdrawal::Cancelled => state.cancelled += 1,
        }
        true
    }

    /// Corrects a tenant's charge by `delta` (real minus charged cost).
    pub fn correct(&mut self, tenant: &str, delta: f64, now: Instant) {
        if let Some(state) = self.tenants.get_mut(tenant) {
            state.counter += delta;
            state.service += delta;
            state.recent.add(delta, now);
        }
    }

    /// An admitted request finished.
    pub fn release(&mut self, tenant: &str) {
        if let Some(state) = self.tenants.get_mut(tenant) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    /// An admitted request was abandoned before it ran: it frees its room
    /// and its charge is taken back.
    pub fn refund(&mut self, tenant: &str, cost: f64, now: Instant) {
        self.correct(tenant, -cost, now);
        self.release(tenant);
    }

    pub fn tenant_stats(&self) -> Vec<TenantStats> {
        let mut stats: Vec<TenantStats> = self
            .tenants
            .iter()
            .map(|(id, t)| TenantStats {
                tenant: id.to_string(),
                weight: t.weight,
                priority: t.priority,
                virtual_counter: t.counter,
                service: t.service,
                queued: t.queued,
                in_flight: t.in_flight,
                admitted: t.admitted,
                rejected_full: t.rejected_full,
                timed_out: t.timed_out,
                cancelled: t.cancelled,
                waits: t.waits.clone(),
            })
            .collect();
        stats.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        stats
    }

    /// The tenant's shared id, reusing the stored one so ids are allocated
    /// once per tenant rather than once per request.
    fn tenant_id(&self, tenant: &str) -> TenantId {
        self.tenants
            .get_key_value(tenant)
            .map_or_else(|| Arc::from(tenant), |(id, _)| id.clone())
    }

    /// Counter a tenant is lifted to when it starts waiting in `band`, or
    /// `None` when it is already backlogged there. The floor is the smallest
    /// counter among the band's backlogged tenants or, when nobody waits, the
    /// band's virtual time.
    fn lift_floor(&self, band: u32, tenant: &str) -> Option<f64> {
        let Some(band_state) = self.bands.get(&band) else {
            return Some(0.0);
        };
        if band_state.backlogged.contains(tenant) {
            return None;
        }
        let min_backlogged = band_state
            .backlogged
            .iter()
            .filter_map(|id| self.tenants.get(id))
            .map(|t| t.counter)
            .min_by(f64::total_cmp);
        Some(min_backlogged.unwrap_or(band_state.virtual_time))
    }

    /// Highest non-empty band, then its backlogged tenant with the smallest
    /// counter. Ties go to the tenant served least recently (a tenant just
    /// lifted to a heavy tenant's counter must not lose to that tenant's
    /// older backlog), then to the earlier head request.
    fn fairest_head(&self) -> Option<(u32, TenantId)> {
        self.fairest_head_where(|_| true)
    }

    /// [`Self::fairest_head`] among the tenants `eligible` accepts.
    fn fairest_head_where(
        &self,
        eligible: impl Fn(&TenantState) -> bool,
    ) -> Option<(u32, TenantId)> {
        self.bands.iter().rev().find_map(|(&band, band_state)| {
            let tenant = band_state
                .backlogged
                .iter()
                .filter_map(|id| self.tenants.get(id).map(|t| (id, t)))
                .filter(|(_, t)| eligible(t))
                .min_by(|(_, a), (_, b)| {
                    a.counter
                        .total_cmp(&b.counter)
                        .then(a.last_served.cmp(&b.last_served))
                        .then(a.head_seq(band).cmp(&b.head_seq(band)))
                })?
                .0
                .clone();
            Some((band, tenant))
        })
    }

    /// The earliest waiting request across all tenants and bands.
    fn oldest_head(&self) -> Option<(u32, TenantId)> {
        self.bands
            .iter()
            .flat_map(|(&band, b)| b.backlogged.iter().map(move |id| (band, id)))
            .filter_map(|(band, id)| {
                let seq = self.tenants.get(id)?.head_seq(band);
                Some((seq, band, id))
            })
            .min_by_key(|(seq, _, _)| *seq)
            .map(|(_, band, id)| (band, id.clone()))
    }
}
