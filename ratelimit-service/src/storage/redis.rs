//! The Redis store: the same counters as the memory store, changed by Lua
//! scripts (`storage/lua/`), which Redis runs one at a time: a script's
//! check and update are atomic against every other replica's.
//!
//! Keys are limits/keys.rs's names behind the prefix `llmgw:`: rate buckets
//! are hashes {l, t}, calendar counters hashes {spent, resv}, slots plain
//! counts, a lease its record as JSON and `leases` a sorted set of lease
//! ids by expiry. Scripts take key names from their argument, so this
//! targets a single Redis (or a primary with replicas), not Cluster.

use async_trait::async_trait;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{
    BucketHit, CounterField, HitOutcome, Hold, Meter, Move, Refusal, ReserveOutcome, ReservePlan,
    ScopeUsage, SettlePlan, SpendTotal, Store, StoreError,
};
use crate::lease::LeaseRecord;
use crate::limits::{BucketView, Unit, keys};

const PREFIX: &str = "llmgw:";

macro_rules! lua {
    ($name:literal) => {
        concat!(
            include_str!("lua/prelude.lua"),
            "\n",
            include_str!(concat!("lua/", $name))
        )
    };
}

pub struct RedisStore {
    conn: ConnectionManager,
    reserve: Script,
    settle: Script,
    renew: Script,
    hit: Script,
}

impl RedisStore {
    /// Connects (and reconnects on its own later). A Redis that does not
    /// answer within half a second fails the call rather than holding the
    /// request: the filter's fail mode then decides.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            reserve: Script::new(lua!("reserve.lua")),
            settle: Script::new(lua!("settle.lua")),
            renew: Script::new(lua!("renew.lua")),
            hit: Script::new(lua!("hit.lua")),
        })
    }
}

/// `-1` is "unlimited" on the wire: Lua's cjson turns JSON null into a
/// sentinel that compares like no number.
fn wire(v: Option<u64>) -> i64 {
    v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// One hold as the reserve script reads it: `m` is the meter (`b` bucket,
/// `q` calendar counter, `c` slots), `lim` -1 for "counted, never refuses".
#[derive(Serialize)]
struct HoldWire<'a> {
    k: &'a str,
    m: &'static str,
    lim: i64,
    p: u64,
    r: u64,
    c: u64,
    v: bool,
}

impl<'a> From<&'a Hold> for HoldWire<'a> {
    fn from(h: &'a Hold) -> Self {
        let (m, p, r) = match h.meter {
            Meter::Bucket { period_ms } => ("b", period_ms, 0),
            Meter::Counter { resets_in_ms } => ("q", 0, resets_in_ms),
            Meter::Slots => ("c", 0, 0),
        };
        HoldWire {
            k: &h.key,
            m,
            lim: wire(h.limit),
            p,
            r,
            c: h.cost,
            v: h.reported(),
        }
    }
}

#[derive(Serialize)]
struct ReserveWire<'a> {
    prefix: &'a str,
    now: i64,
    lease_id: &'a str,
    lease_json: String,
    expires: i64,
    holds: Vec<HoldWire<'a>>,
}

#[derive(Deserialize)]
struct ReserveReply {
    /// 0-based index of the first refusing hold.
    refused: Option<usize>,
    #[serde(default)]
    wait: f64,
    views: Vec<ViewReply>,
}

/// A hold's view, or `false` for none (cjson cannot leave holes in arrays).
#[derive(Deserialize)]
#[serde(untagged)]
enum ViewReply {
    View((u64, u64, u64)),
    None(serde::de::IgnoredAny),
}

fn view((limit, remaining, reset_ms): (u64, u64, u64)) -> BucketView {
    BucketView {
        limit,
        remaining,
        reset_ms,
    }
}

/// One settlement move: `m` is `b` bucket add, `s` / `r` the spent /
/// reserved side of a counter, `c` a slot freed.
#[derive(Serialize)]
struct MoveWire<'a> {
    k: &'a str,
    m: &'static str,
    lim: u64,
    p: u64,
    d: i64,
}

impl<'a> From<&'a Move> for MoveWire<'a> {
    fn from(m: &'a Move) -> Self {
        match m {
            Move::Bucket { key, rate, delta } => MoveWire {
                k: key,
                m: "b",
                lim: rate.limit,
                p: rate.period_ms,
                d: *delta,
            },
            Move::Counter { key, field, delta } => MoveWire {
                k: key,
                m: match field {
                    CounterField::Spent => "s",
                    CounterField::Reserved => "r",
                },
                lim: 0,
                p: 0,
                d: *delta,
            },
            Move::Slot { key } => MoveWire {
                k: key,
                m: "c",
                lim: 0,
                p: 0,
                d: -1,
            },
        }
    }
}

#[derive(Serialize)]
struct SettleWire<'a> {
    prefix: &'a str,
    now: i64,
    lease_id: &'a str,
    only_if_expired: bool,
    moves: Vec<MoveWire<'a>>,
}

#[derive(Serialize)]
struct RenewWire<'a> {
    prefix: &'a str,
    now: i64,
    expires: i64,
    ids: &'a [String],
}

#[derive(Serialize)]
struct HitWire<'a> {
    prefix: &'a str,
    now: i64,
    hits: Vec<HitEntryWire<'a>>,
}

#[derive(Serialize)]
struct HitEntryWire<'a> {
    key: &'a str,
    limit: u64,
    period: u64,
    hits: f64,
    enforce: bool,
}

#[derive(Deserialize)]
struct HitReply {
    allowed: bool,
    results: Vec<(bool, u64, u64, u64)>,
}

#[async_trait]
impl Store for RedisStore {
    async fn reserve(&self, plan: &ReservePlan) -> Result<ReserveOutcome, StoreError> {
        let lease = &plan.lease;
        let arg = ReserveWire {
            prefix: PREFIX,
            now: plan.now_ms,
            lease_id: &lease.id,
            lease_json: serde_json::to_string(lease)?,
            expires: lease.expires_ms,
            holds: plan.holds.iter().map(HoldWire::from).collect(),
        };
        let reply: String = self
            .reserve
            .arg(serde_json::to_string(&arg)?)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let reply: ReserveReply = serde_json::from_str(&reply)?;
        let views = reply
            .views
            .into_iter()
            .map(|v| match v {
                ViewReply::View(v) => Some(view(v)),
                ViewReply::None(_) => None,
            })
            .collect();
        Ok(match reply.refused {
            Some(hold) => ReserveOutcome::Refused {
                refusal: Refusal {
                    hold,
                    what: plan.holds.get(hold).and_then(|h| h.what),
                    wait_ms: reply.wait.max(0.0) as u64,
                },
                views,
            },
            None => ReserveOutcome::Admitted { views },
        })
    }

    async fn lease(&self, lease_id: &str) -> Result<Option<LeaseRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let (json, score): (Option<String>, Option<f64>) = redis::pipe()
            .cmd("GET")
            .arg(format!("{PREFIX}{}", keys::lease(lease_id)))
            .cmd("ZSCORE")
            .arg(format!("{PREFIX}{}", keys::LEASES))
            .arg(lease_id)
            .query_async(&mut conn)
            .await?;
        let Some(json) = json else { return Ok(None) };
        let mut lease: LeaseRecord = serde_json::from_str(&json)?;
        if let Some(score) = score {
            lease.expires_ms = score as i64;
        }
        Ok(Some(lease))
    }

    async fn settle(&self, plan: &SettlePlan) -> Result<bool, StoreError> {
        let arg = SettleWire {
            prefix: PREFIX,
            now: plan.now_ms,
            lease_id: &plan.lease_id,
            only_if_expired: plan.only_if_expired,
            moves: plan.moves.iter().map(MoveWire::from).collect(),
        };
        let applied: i64 = self
            .settle
            .arg(serde_json::to_string(&arg)?)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(applied == 1)
    }

    async fn renew(
        &self,
        lease_ids: &[String],
        expires_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        if lease_ids.is_empty() {
            return Ok(Vec::new());
        }
        let arg = RenewWire {
            prefix: PREFIX,
            now: crate::clock::now_ms(),
            expires: expires_ms,
            ids: lease_ids,
        };
        Ok(self
            .renew
            .arg(serde_json::to_string(&arg)?)
            .invoke_async(&mut self.conn.clone())
            .await?)
    }

    async fn expired(&self, now_ms: i64, max: usize) -> Result<Vec<String>, StoreError> {
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(format!("{PREFIX}{}", keys::LEASES))
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(max)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    async fn hit(&self, hits: &[BucketHit], now_ms: i64) -> Result<HitOutcome, StoreError> {
        if hits.is_empty() {
            return Ok(HitOutcome {
                allowed: true,
                results: Vec::new(),
            });
        }
        let arg = HitWire {
            prefix: PREFIX,
            now: now_ms,
            hits: hits
                .iter()
                .map(|h| HitEntryWire {
                    key: &h.key,
                    limit: h.rate.limit,
                    period: h.rate.period_ms,
                    hits: h.hits,
                    enforce: h.enforce,
                })
                .collect(),
        };
        let reply: String = self
            .hit
            .arg(serde_json::to_string(&arg)?)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let reply: HitReply = serde_json::from_str(&reply)?;
        Ok(HitOutcome {
            allowed: reply.allowed,
            results: reply
                .results
                .into_iter()
                .map(|(fits, limit, remaining, reset)| (fits, view((limit, remaining, reset))))
                .collect(),
        })
    }

    async fn usage(
        &self,
        scopes: &[String],
        day: &str,
        month: &str,
    ) -> Result<Vec<ScopeUsage>, StoreError> {
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for s in scopes {
            pipe.cmd("GET").arg(format!("{PREFIX}{}", keys::slots(s)));
            for period in [day, month] {
                pipe.cmd("HMGET")
                    .arg(format!("{PREFIX}{}", keys::counter(s, Unit::Usd, period)))
                    .arg("spent")
                    .arg("resv");
            }
        }
        type Row = (
            Option<u64>,
            (Option<u64>, Option<u64>),
            (Option<u64>, Option<u64>),
        );
        let rows: Vec<Row> = {
            let flat: Vec<redis::Value> = pipe.query_async(&mut self.conn.clone()).await?;
            flat.chunks(3)
                .map(|c| -> Result<Row, redis::RedisError> {
                    Ok((
                        redis::from_redis_value_ref(&c[0])?,
                        redis::from_redis_value_ref(&c[1])?,
                        redis::from_redis_value_ref(&c[2])?,
                    ))
                })
                .collect::<Result<_, _>>()?
        };
        Ok(rows
            .into_iter()
            .map(|(c, (sd, rd), (sm, rm))| ScopeUsage {
                in_flight: c.unwrap_or(0),
                spent_day: sd.unwrap_or(0),
                spent_month: sm.unwrap_or(0),
                reserved_day: rd.unwrap_or(0),
                reserved_month: rm.unwrap_or(0),
            })
            .collect())
    }

    async fn restore_spend(&self, _totals: &[SpendTotal]) -> Result<(), StoreError> {
        // Redis already holds the totals of every replica; adding this
        // replica's ledger again would count it twice.
        Ok(())
    }

    fn spend_is_shared(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
