//! Logging and tracing set-up: `tracing` with `RUST_LOG` filtering, pretty for people or JSON for
//! containers; and, when `[telemetry] otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set,
//! OpenTelemetry traces exported over OTLP/HTTP with protobuf.

mod export;
pub mod otlp_client;

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetrySettings};

/// Targets held at `info` whatever `RUST_LOG` says: the WebSocket library traces its handshake's
/// request line, which carries a notification channel's id, a secret that opens its socket.
const QUIET: &[&str] = &["tungstenite=info", "tokio_tungstenite=info"];

pub use patchbay_core::trace::TRACE_TARGET;

/// Installs the global subscriber, logs only. `RUST_LOG` wins over `default_filter`, but not over
/// [`QUIET`].
pub fn init(format: LogFormat, default_filter: &str) {
    install(format, default_filter, None);
}

/// What shutdown needs of tracing: the provider whose queue it flushes.
#[derive(Default)]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Exports what is queued, within `timeout`; spans still queued then are dropped.
    pub fn shutdown(self, timeout: Duration) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown_with_timeout(timeout) {
                tracing::warn!(error = %e, "traces still queued at shutdown were not all exported");
            }
        }
    }
}

/// Whether traces are exported: an endpoint in the settings, or the standard environment's.
pub fn exporting(settings: &TelemetrySettings) -> bool {
    !settings.otlp_endpoint.trim().is_empty()
        || [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the global subscriber with logs and, when configured, trace export.
pub fn init_with(
    format: LogFormat,
    default_filter: &str,
    settings: &TelemetrySettings,
) -> anyhow::Result<Tracing> {
    let provider = if exporting(settings) {
        Some(provider(settings)?)
    } else {
        None
    };
    install(format, default_filter, provider.clone());
    Ok(Tracing { provider })
}

fn provider(settings: &TelemetrySettings) -> anyhow::Result<SdkTracerProvider> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(otlp_client::OtlpClient::new(settings.export_timeout())?)
        .with_timeout(settings.export_timeout());
    let endpoint = settings.otlp_endpoint.trim();
    if !endpoint.is_empty() {
        // The settings name the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT does.
        exporter = exporter.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint: {e}"))?;
    // The exporter's requests run on a small runtime of their own, beside the gateway's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut resource = Resource::builder().with_attributes(settings.resource_attributes());
    // OTEL_SERVICE_NAME, when set, names the service over the settings (the standard's order).
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(settings.service_name.clone());
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(export::QueuedExport::new(
            exporter,
            settings.max_queue_size,
            runtime,
        ))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio,
        ))))
        .with_resource(resource.build())
        .build())
}

fn install(format: LogFormat, default_filter: &str, provider: Option<SdkTracerProvider>) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    for directive in QUIET
        .iter()
        .copied()
        .chain([format!("{TRACE_TARGET}=off").as_str()])
    {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    // Colours only for a person at a terminal who has not asked for none (https://no-color.org): a
    // file, a pipe or a container's log gets plain text.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr);
    let logs = match format {
        // The current span only: requests and jobs are never nested, and a list of every span in
        // scope would repeat its fields.
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt.compact().with_filter(filter).boxed(),
    };
    // Patchbay's own spans and events at info, whatever the logs show: other crates' are noise in a
    // trace, and nothing at debug or below is meant for one.
    let traces = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("patchbay"))
            .with_filter(LevelFilter::INFO)
            .with_filter(filter_fn(|meta| meta.target().starts_with("patchbay")))
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
}
