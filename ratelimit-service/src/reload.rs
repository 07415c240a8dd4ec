//! The live registry and its hot reload (SIGHUP, file change, admin API).
//!
//! Counters, leases and spend live in the store keyed by tenant and model
//! names, not in the registry, so swapping the registry keeps them: a
//! tenant's used RPM/TPM is measured against its new limit from the next
//! request on. A file that does not parse or validate is refused with a
//! logged error and the old registry stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tenant_registry::{Registry, RegistryError};
use thiserror::Error;

use crate::metrics::{Metrics, ResultLabel};

/// The registry in force; readers take a cheap snapshot per request.
#[derive(Clone)]
pub struct SharedRegistry(Arc<RwLock<Arc<Registry>>>);

impl SharedRegistry {
    pub fn new(registry: Registry) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(registry))))
    }

    pub fn current(&self) -> Arc<Registry> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, registry: Registry) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(registry);
    }
}

#[derive(Debug, Error)]
pub enum ReloadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: RegistryError,
    },
}

/// Reads and validates the registry file. `audit_keyed`: whether an audit
/// master key is configured (a tenant asking for encryption needs one).
pub fn load(path: &Path, audit_keyed: bool) -> Result<Registry, ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReloadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |source| ReloadError::Invalid {
        path: path.to_owned(),
        source,
    };
    let registry = Registry::from_toml(&text).map_err(invalid)?;
    // What only this service reads is checked here: the filters never see
    // the audit trail's redaction patterns.
    crate::audit::redact::check(&registry).map_err(invalid)?;
    if !audit_keyed && let Some(t) = registry.tenants().iter().position(|t| t.audit().encrypt) {
        return Err(invalid(RegistryError::Invalid {
            field: format!("tenants[{t}].audit.encrypt"),
            reason: "needs ratelimit-service --audit-key-file (AUDIT_KEY_FILE)".into(),
        }));
    }
    Ok(registry)
}

/// Reloads the registry file into a [`SharedRegistry`].
pub struct Reloader {
    path: PathBuf,
    registry: SharedRegistry,
    metrics: Arc<Metrics>,
    audit_keyed: bool,
    /// Modification time of the file last looked at (loaded or refused), so
    /// a refused file is not retried every second.
    seen: Mutex<Option<(SystemTime, u64)>>,
}

impl Reloader {
    pub fn new(
        path: PathBuf,
        registry: SharedRegistry,
        metrics: Arc<Metrics>,
        audit_keyed: bool,
    ) -> Self {
        let seen = Mutex::new(mtime(&path));
        Self {
            path,
            registry,
            metrics,
            audit_keyed,
            seen,
        }
    }

    /// Loads the file now; on error the old registry stays. Returns the
    /// number of tenants loaded.
    pub fn reload(&self) -> Result<usize, ReloadError> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = mtime(&self.path);
        let result = load(&self.path, self.audit_keyed);
        let label = ResultLabel {
            result: if result.is_ok() { "ok" } else { "error" }.to_owned(),
        };
        self.metrics.reloads.get_or_create(&label).inc();
        match result {
            Ok(registry) => {
                let tenants = registry.tenants().len();
                self.registry.replace(registry);
                tracing::info!(path = %self.path.display(), tenants, "registry reloaded");
                Ok(tenants)
            }
            Err(e) => {
                tracing::error!(error = %e, "registry reload refused; keeping the old registry");
                Err(e)
            }
        }
    }

    /// Reloads if the file's modification time changed since last look.
    pub fn reload_if_changed(&self) {
        let now = mtime(&self.path);
        let changed = *self.seen.lock().unwrap_or_else(|e| e.into_inner()) != now;
        if changed && now.is_some() {
            let _ = self.reload();
        }
    }

    /// Polls the file every `interval` and reloads on SIGHUP, until the task
    /// is aborted.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(unix)]
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; reload by file change or admin API");
                None
            }
        };
        loop {
            #[cfg(unix)]
            {
                let hup_recv = async {
                    match hup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => self.reload_if_changed(),
                    Some(()) = hup_recv => {
                        tracing::info!("SIGHUP: reloading registry");
                        let _ = self.reload();
                    }
                }
            }
            #[cfg(not(unix))]
            {
                tick.tick().await;
                self.reload_if_changed();
            }
        }
    }
}

/// Modification time and length: the length catches a rewrite within the
/// timestamp granularity of coarse filesystems.
fn mtime(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
