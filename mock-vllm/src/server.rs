//! Starting and stopping one replica: engine task plus HTTP server.

use crate::api::{self, AppState};
use crate::config::{ConfigError, MockConfig};
use crate::engine::Engine;
use crate::metrics::SchedulerGauges;
use crate::tokenizer::{PromptTokenizer, TokenizerError};
use axum::http::HeaderValue;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a graceful shutdown may take before open connections are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error("replica name `{0}` cannot be sent as a header value")]
    ReplicaName(String),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("binding {addr} failed")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the listener's address failed")]
    LocalAddr(#[source] std::io::Error),
}

/// A running replica. Dropping it aborts its tasks; [`MockServer::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct MockServer {
    local_addr: SocketAddr,
    engine: Engine,
    engine_task: Option<JoinHandle<()>>,
    server_task: Option<JoinHandle<std::io::Result<()>>>,
    shutdown: Option<oneshot::Sender<()>>,
}

/// Binds `listen` and starts serving.
pub async fn start(config: MockConfig, listen: SocketAddr) -> Result<MockServer, StartError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    start_on(config, listener)
}

/// Serves on an already bound listener (must be called inside a tokio runtime).
pub fn start_on(config: MockConfig, listener: TcpListener) -> Result<MockServer, StartError> {
    config.validate()?;
    let replica_header = HeaderValue::from_str(&config.replica_name)
        .map_err(|_| StartError::ReplicaName(config.replica_name.clone()))?;
    let tokenizer = PromptTokenizer::cl100k()?;
    let local_addr = listener.local_addr().map_err(StartError::LocalAddr)?;
    let config = Arc::new(config);
    let engine = Engine::new(Arc::clone(&config));
    let engine_task = engine.spawn();
    let app = api::router(AppState::new(
        config,
        engine.clone(),
        tokenizer,
        replica_header,
    ));
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let server_task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown_rx.await;
            })
            .await
    });
    Ok(MockServer {
        local_addr,
        engine,
        engine_task: Some(engine_task),
        server_task: Some(server_task),
        shutdown: Some(shutdown),
    })
}

impl MockServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Running/waiting counts and KV usage right now (what `/metrics` would report).
    pub fn gauges(&self) -> SchedulerGauges {
        self.engine.gauges()
    }

    /// Stops the engine first, so that open streams end, then drains the HTTP server.
    pub async fn shutdown(mut self) {
        if let Some(engine_task) = self.engine_task.take() {
            engine_task.abort();
            let _ = engine_task.await;
        }
        self.engine.stop();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server_task) = self.server_task.take() {
            let abort = server_task.abort_handle();
            match tokio::time::timeout(SHUTDOWN_GRACE, server_task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::warn!(%error, "server ended with an error"),
                Ok(Err(error)) => tracing::warn!(%error, "server task failed"),
                Err(_) => {
                    tracing::warn!("graceful shutdown timed out; cutting connections");
                    abort.abort();
                }
            }
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(task) = self.engine_task.take() {
            task.abort();
        }
        if let Some(task) = self.server_task.take() {
            task.abort();
        }
        self.engine.stop();
    }
}
