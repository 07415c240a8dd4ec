//! The scenarios: which tenants send what, at which rates, with which
//! weights. Rates are multiples of the pool's nominal capacity, so the same
//! scenario stays meaningful when the pool is resized on the command line.

use serde::Serialize;

/// Prompt of a chat request (~50 tokens) and of a batch request (~2,000).
pub const CHAT_PROMPT_BYTES: usize = 200;
pub const BATCH_PROMPT_BYTES: usize = 8_000;
/// Output tokens of every request: the mock generates exactly this many.
pub const MAX_TOKENS: u32 = 16;

/// Every scenario the subcommand knows, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioName {
    /// The steady chat tenants alone: the TTFT baseline.
    Solo,
    /// One tenant at 10x the pool's capacity next to the steady tenants.
    Noisy,
    /// Three equal-weight tenants offering 2x, 1x and 0.5x capacity.
    Equal,
    /// Weights 2:1, both tenants saturating the pool.
    Weighted,
    /// A tenant bursting on and off next to two backlogged tenants.
    Onoff,
    /// Long-prompt batch next to short chat.
    Mixed,
}

impl ScenarioName {
    pub const ALL: [ScenarioName; 6] = [
        ScenarioName::Solo,
        ScenarioName::Noisy,
        ScenarioName::Equal,
        ScenarioName::Weighted,
        ScenarioName::Onoff,
        ScenarioName::Mixed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioName::Solo => "solo",
            ScenarioName::Noisy => "noisy",
            ScenarioName::Equal => "equal",
            ScenarioName::Weighted => "weighted",
            ScenarioName::Onoff => "onoff",
            ScenarioName::Mixed => "mixed",
        }
    }
}

/// What one request of a tenant looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Chat,
    Batch,
}

impl Shape {
    pub fn prompt_bytes(self) -> usize {
        match self {
            Shape::Chat => CHAT_PROMPT_BYTES,
            Shape::Batch => BATCH_PROMPT_BYTES,
        }
    }
}

/// A stretch of time during which a tenant sends at `rate` requests/s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Phase {
    pub from_s: f64,
    pub to_s: f64,
    pub rate: f64,
}

/// One tenant's part in a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct TenantLoad {
    /// Tenant id in the registry, unique across scenarios so every scenario
    /// starts from fresh virtual counters.
    pub tenant: String,
    /// Short role for tables and legends (`heavy`, `steady-1`).
    pub role: String,
    pub weight: f64,
    pub shape: Shape,
    /// Poisson arrivals at each phase's rate.
    pub phases: Vec<Phase>,
    /// A light chat tenant whose TTFT is held against the solo baseline.
    pub steady: bool,
}

impl TenantLoad {
    fn new(scenario: ScenarioName, role: &str, shape: Shape, rate: f64, seconds: f64) -> Self {
        Self {
            tenant: format!("{}-{role}", scenario.as_str()),
            role: role.to_owned(),
            weight: 1.0,
            shape,
            phases: vec![Phase {
                from_s: 0.0,
                to_s: seconds,
                rate,
            }],
            steady: false,
        }
    }

    fn weighted(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    fn steady(mut self) -> Self {
        self.steady = true;
        self
    }

    /// Mean offered rate over the scenario.
    pub fn offered_rps(&self, seconds: f64) -> f64 {
        let requests: f64 = self
            .phases
            .iter()
            .map(|p| p.rate * (p.to_s.min(seconds) - p.from_s).max(0.0))
            .sum();
        requests / seconds.max(f64::MIN_POSITIVE)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: ScenarioName,
    pub title: String,
    pub question: String,
    pub seconds: f64,
    pub tenants: Vec<TenantLoad>,
}

/// Light tenants: each offers a tenth of the pool.
const STEADY_SHARE: f64 = 0.1;
const STEADY_TENANTS: usize = 3;

fn steady_tenants(
    name: ScenarioName,
    capacity: f64,
    seconds: f64,
    count: usize,
) -> Vec<TenantLoad> {
    (1..=count)
        .map(|i| {
            TenantLoad::new(
                name,
                &format!("steady-{i}"),
                Shape::Chat,
                STEADY_SHARE * capacity,
                seconds,
            )
            .steady()
        })
        .collect()
}

/// On for `on` seconds at `rate` every `period` seconds, the first burst at
/// `first`, until `seconds`.
fn bursts(rate: f64, on: f64, period: f64, first: f64, seconds: f64) -> Vec<Phase> {
    let mut phases = Vec::new();
    let mut from = first;
    while from < seconds {
        phases.push(Phase {
            from_s: from,
            to_s: (from + on).min(seconds),
            rate,
        });
        from += period;
    }
    phases
}

/// The scenario `name` against a pool serving `capacity` chat requests/s.
pub fn scenario(name: ScenarioName, capacity: f64, seconds: f64) -> Scenario {
    let chat = |role: &str, multiple: f64| {
        TenantLoad::new(name, role, Shape::Chat, multiple * capacity, seconds)
    };
    let (title, question, tenants) = match name {
        ScenarioName::Solo => (
            "solo baseline",
            "Three light chat tenants, each at a tenth of the pool's capacity, alone: the TTFT every \
             later scenario's light tenants are held against.",
            steady_tenants(name, capacity, seconds, STEADY_TENANTS),
        ),
        ScenarioName::Noisy => (
            "noisy neighbour",
            "The same three light tenants while one tenant sends 10x what the pool can serve. Does the \
             burst move their TTFT?",
            {
                let mut t = steady_tenants(name, capacity, seconds, STEADY_TENANTS);
                t.push(chat("heavy", 10.0));
                t
            },
        ),
        ScenarioName::Equal => (
            "equal weights, saturated",
            "Three tenants of equal weight offering 2x, 1x and 0.5x the pool's capacity: all are \
             backlogged, so each is owed a third of the service whatever it offers.",
            vec![chat("2x", 2.0), chat("1x", 1.0), chat("half", 0.5)],
        ),
        ScenarioName::Weighted => (
            "weighted tiers 2:1",
            "Two tenants offering the same 1.5x capacity, weights 2 and 1: the weight-2 tenant is owed \
             twice the token service.",
            vec![
                chat("gold", 1.5).weighted(2.0),
                chat("silver", 1.5).weighted(1.0),
            ],
        ),
        ScenarioName::Onoff => (
            "on-off bursts",
            "A tenant sending bursts of ~30 requests (2x capacity for 0.6 s) every 5 s next to two \
             tenants offering 0.6x capacity each, backlogged throughout. A returning burst is served at \
             once, at its fair third of the pool, without cashing in the time it was idle.",
            vec![
                TenantLoad {
                    phases: bursts(2.0 * capacity, 0.6, 5.0, 2.0, seconds),
                    ..chat("burst", 0.0)
                },
                chat("steady-a", 0.6),
                chat("steady-b", 0.6),
            ],
        ),
        ScenarioName::Mixed => (
            "long-prompt batch next to short chat",
            "A batch tenant sending ~2,000-token prompts at the pool's request capacity next to two \
             light chat tenants: token-weighted costs keep the batch from crowding chat out.",
            {
                let mut t = vec![TenantLoad::new(
                    name,
                    "batch",
                    Shape::Batch,
                    capacity,
                    seconds,
                )];
                t.extend(steady_tenants(name, capacity, seconds, 2));
                t
            },
        ),
    };
    Scenario {
        name,
        title: title.to_owned(),
        question: question.to_owned(),
        seconds,
        tenants,
    }
}
