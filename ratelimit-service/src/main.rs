use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ratelimit_service::telemetry::Telemetry;
use ratelimit_service::{Cli, Service, fair_gate};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let telemetry = match Telemetry::init(cli.otlp_endpoint.as_deref(), "ratelimit-service") {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let service = match Service::start(&cli, fair_gate(cli.scheduling_policy())).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "LISTENING grpc={} admin={}",
        service.grpc_addr, service.admin_addr
    );
    let _ = stdout.flush();
    drop(stdout);
    shutdown_signal().await;
    tracing::info!("shutting down");
    service.shutdown().await;
    // Flushing waits on the export task, which runs on this runtime.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
