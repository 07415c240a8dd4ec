//! OpenTelemetry traces: spans of Admit (with its wait in the pool's fair
//! queue) and of settlement, exported over OTLP/gRPC when
//! `--otlp-endpoint` is set, and joined to the gateway's trace through the
//! W3C `traceparent` the admission filter passes in each call (Envoy's
//! span for the request; see envoy/README.md, "Traces").
//!
//! Without an endpoint no provider is installed and every span is the
//! no-op one: nothing is recorded and nothing is sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, global};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider};
use thiserror::Error;

/// Spans wait at most this long before they are sent.
const EXPORT_DELAY: Duration = Duration::from_secs(1);
/// The instrumentation scope of every span.
const SCOPE: &str = "ratelimit-service";

#[derive(Debug, Error)]
#[error("OTLP exporter for {endpoint}: {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

/// The installed tracer provider; flush it with [`Telemetry::shutdown`].
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global tracer provider exporting to `endpoint`
    /// (`http://collector:4317`), or nothing when `None`. Must run inside
    /// the Tokio runtime, which carries the exports.
    pub fn init(endpoint: Option<&str>, service_name: &str) -> Result<Self, TelemetryError> {
        let Some(endpoint) = endpoint else {
            return Ok(Self { provider: None });
        };
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| TelemetryError {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
        let processor = BatchSpanProcessor::builder(exporter, Tokio)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_DELAY)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            )
            .build();
        global::set_tracer_provider(provider.clone());
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// Sends the spans still buffered.
    pub fn shutdown(&self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "trace export did not flush");
        }
    }
}

/// Whether spans are exported (set once by [`Telemetry::init`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: without a collector, the request path skips
/// building span attributes and parsing traceparents altogether.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer spans are started from.
pub fn tracer() -> global::BoxedTracer {
    global::tracer_provider().tracer(SCOPE)
}

/// The remote parent named by a W3C `traceparent` (an empty context when it
/// is absent or malformed: the span then starts its own trace).
pub fn parent(traceparent: &str) -> Context {
    if traceparent.is_empty() || traceparent.len() > 128 {
        return Context::new();
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    #[test]
    fn a_traceparent_names_the_remote_parent() {
        let cx = parent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        for bad in ["", "00---01", "garbage", &"0".repeat(200)] {
            assert!(!parent(bad).span().span_context().is_valid(), "{bad:?}");
        }
    }
}
