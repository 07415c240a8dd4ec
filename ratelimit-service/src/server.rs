//! Wires the service together and runs its listeners and background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admission_proto::v1::admission_server::AdmissionServer;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::audit::seal::MasterKey;
use crate::audit::{AuditError, AuditTrail};
use crate::clock::now_ms;
use crate::config::{Cli, ConfigError};
use crate::grpc::admission::AdmissionService;
use crate::grpc::rls::RlsService;
use crate::ledger::{Ledger, LedgerError};
use crate::limiter::{Limiter, LimiterSettings, Records};
use crate::limits::Throttles;
use crate::metrics::Metrics;
use crate::pool::gate::{PoolGate, UnlimitedGate};
use crate::pool::models::PoolModels;
use crate::reload::{ReloadError, Reloader, SharedRegistry};
use crate::rls::RlsLimiter;
use crate::rls::config::{RlsConfig, RlsConfigError};
use crate::storage::{MemoryStore, RedisStore, Store, StoreError};

/// How often expired leases are looked for: a lease is freed at most this
/// long after its TTL.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// How often audit day files past their retention are looked for.
pub const AUDIT_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// How often the registry file's mtime is checked.
pub const RELOAD_POLL: Duration = Duration::from_secs(1);
/// In-flight calls (Admits waiting in a queue) get this long at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registry(#[from] ReloadError),
    #[error(transparent)]
    RlsConfig(#[from] RlsConfigError),
    #[error("cannot connect to redis: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Builds the pool gate once the registry and metrics exist (the fair queue
/// reads pool settings and registers its metrics; its replica scrapers fill
/// the pools' model table).
pub type GateFactory =
    Box<dyn FnOnce(&SharedRegistry, &mut Metrics, &PoolModels) -> Arc<dyn PoolGate> + Send>;

/// A gate factory for the per-pool fair queues ([`crate::pool::fair_gate::FairGate`]).
pub fn fair_gate(policy: crate::pool::fair_queue::SchedulingPolicy) -> GateFactory {
    Box::new(move |registry, metrics, models| {
        crate::pool::fair_gate::FairGate::new(&registry.current(), policy, metrics, models)
            as Arc<dyn PoolGate>
    })
}

/// A gate factory for [`UnlimitedGate`] (no scrapers: no pool limits).
pub fn unlimited_gate() -> GateFactory {
    Box::new(|_, _, _| Arc::new(UnlimitedGate))
}

/// A running service. Dropping it stops everything at once; [`Self::shutdown`]
/// lets in-flight calls finish first.
pub struct Service {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    limiter: Limiter,
    reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Service {
    pub async fn start(cli: &Cli, gate: GateFactory) -> Result<Self, StartError> {
        let token = cli.admin_token()?;
        let audit_key = cli
            .audit_key_file
            .as_deref()
            .map(MasterKey::load)
            .transpose()
            .map_err(AuditError::from)?;
        let registry =
            SharedRegistry::new(crate::reload::load(&cli.registry, audit_key.is_some())?);
        let rls_config = cli.rls_config.as_deref().map(RlsConfig::load).transpose()?;
        let mut metrics = Metrics::new();
        let pool_models = PoolModels::new(metrics.pool_max_model_len.clone());
        let gate = gate(&registry, &mut metrics, &pool_models);
        let metrics = Arc::new(metrics);

        let store: Arc<dyn Store> = match &cli.redis {
            Some(url) => Arc::new(RedisStore::connect(url).await?),
            None => Arc::new(MemoryStore::new()),
        };
        let (ledger, replay) = Ledger::open(&cli.data_dir, cli.fsync, now_ms())?;
        if !store.spend_is_shared() {
            store.restore_spend(&replay.totals).await?;
        }
        tracing::info!(
            records = replay.records,
            truncated_bytes = replay.truncated_bytes,
            dir = %ledger.dir().display(),
            store = store.name(),
            "spend ledger replayed"
        );

        let ledger_reader = ledger.reader();
        let audit_dir = cli.audit_dir();
        let (audit, _writer) = AuditTrail::start(
            audit_dir.clone(),
            audit_key.clone(),
            registry.clone(),
            metrics.clone(),
        )?;
        let throttles = Arc::new(Throttles::default());
        let limiter = Limiter::new(
            registry.clone(),
            throttles.clone(),
            store.clone(),
            Records { ledger, audit },
            gate,
            metrics.clone(),
            LimiterSettings {
                lease_ttl: cli.lease_ttl(),
                breaker: cli.breaker()?,
            },
        );
        let rls = Arc::new(RlsLimiter::new(
            rls_config,
            registry.clone(),
            throttles,
            store,
            metrics.clone(),
        ));
        let reloader = Arc::new(Reloader::new(
            cli.registry.clone(),
            registry.clone(),
            metrics,
            audit_key.is_some(),
        ));

        let grpc = bind(cli.grpc_listen).await?;
        let admin = bind(cli.admin_listen).await?;
        let grpc_addr = local_addr(&grpc, cli.grpc_listen)?;
        let admin_addr = local_addr(&admin, cli.admin_listen)?;
        let (stop, stopped) = watch::channel(false);

        let grpc_server = {
            let mut stopped = stopped.clone();
            let incoming =
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
            let router = tonic::transport::Server::builder()
                .add_service(
                    AdmissionServer::new(AdmissionService::new(limiter.clone(), pool_models))
                        // Report batches are bounded at 1 MiB by the filter
                        // (MAX_BYTES_PER_CALL); room to spare, never a lost batch.
                        .max_decoding_message_size(16 * 1024 * 1024),
                )
                .add_service(RateLimitServiceServer::new(RlsService::new(rls)));
            tokio::spawn(async move {
                let signal = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            })
        };
        let admin_server = {
            let mut stopped = stopped.clone();
            let app = admin::router(AdminState {
                limiter: limiter.clone(),
                reloader: reloader.clone(),
                ledger: ledger_reader,
                audit: crate::admin::AuditAccess {
                    dir: audit_dir.clone(),
                    key: audit_key,
                },
                source: Arc::from(cli.event_source()),
                token: token.map(Arc::from),
            });
            tokio::spawn(async move {
                let signal = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(admin, app).with_graceful_shutdown(signal).await {
                    tracing::error!(error = %e, "admin server failed");
                }
            })
        };
        let background = vec![
            tokio::spawn(limiter.clone().sweep_forever(SWEEP_INTERVAL)),
            tokio::spawn(reloader.clone().watch(RELOAD_POLL)),
            tokio::spawn(crate::audit::files::sweep_forever(
                audit_dir,
                registry,
                AUDIT_SWEEP_INTERVAL,
            )),
        ];
        Ok(Self {
            grpc_addr,
            admin_addr,
            limiter,
            reloader,
            stop,
            servers: vec![grpc_server, admin_server],
            background,
        })
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Stops accepting, lets in-flight calls finish (up to a few seconds),
    /// then stops the background tasks.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for server in self.servers.drain(..) {
            let abort = server.abort_handle();
            if tokio::time::timeout(DRAIN_TIMEOUT, server).await.is_err() {
                abort.abort();
            }
        }
        for task in self.background.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for task in self.servers.iter().chain(&self.background) {
            task.abort();
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })
}
