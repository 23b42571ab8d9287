//! Sending finished spans to a collector: a bounded queue in front of the OTLP/HTTP exporter, on a
//! thread of its own, so a collector that is down or slow never slows or fails an update.
//!
//! The SDK's batch processor drops spans when its queue is full too, but does not say how many as
//! they go; operators need that count in Prometheus, so this processor keeps the queue itself and
//! counts each span it has to drop (`patchbay_trace_spans_dropped_total`).

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

/// Spans sent in one request at most, and how long a partial batch waits for more.
const BATCH: usize = 512;
const DELAY: Duration = Duration::from_secs(1);

enum Message {
    Span(Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(SyncSender<()>),
    /// Export what is queued, then stop.
    Stop(SyncSender<()>),
}

/// A bounded queue and the thread that exports from it.
pub struct QueuedExport<E: SpanExporter + 'static> {
    queue: SyncSender<Message>,
    exporter: Arc<Mutex<E>>,
}

impl<E: SpanExporter + 'static> std::fmt::Debug for QueuedExport<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedExport").finish_non_exhaustive()
    }
}

impl<E: SpanExporter + 'static> QueuedExport<E> {
    /// Holds at most `capacity` spans waiting for export. `runtime` drives the exporter's requests.
    pub fn new(exporter: E, capacity: usize, runtime: tokio::runtime::Runtime) -> Self {
        let (queue, spans) = sync_channel(capacity.max(1));
        let exporter = Arc::new(Mutex::new(exporter));
        let worker = exporter.clone();
        std::thread::Builder::new()
            .name("patchbay-otlp".into())
            .spawn(move || run(spans, worker, runtime))
            .expect("the export thread starts");
        Self { queue, exporter }
    }

    fn ask(
        &self,
        message: impl FnOnce(SyncSender<()>) -> Message,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (done, finished) = sync_channel(1);
        // A control message waits for room: it must not be dropped as a span would be.
        let deadline = Instant::now() + timeout;
        let mut message = message(done);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    message = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return Err(OTelSdkError::Timeout(timeout)),
                Err(TrySendError::Disconnected(_)) => return Err(OTelSdkError::AlreadyShutdown),
            }
        }
        finished
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

fn run<E: SpanExporter>(
    spans: Receiver<Message>,
    exporter: Arc<Mutex<E>>,
    runtime: tokio::runtime::Runtime,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let export = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let count = spans.len() as u64;
        let exporter = exporter.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = runtime.block_on(exporter.export(spans)) {
            metrics::counter!(crate::metrics::TRACE_SPANS_DROPPED, "why" => "export_failed")
                .increment(count);
            tracing::debug!(target: "patchbay::telemetry", error = %e, "trace export failed");
        }
    };
    // A batch goes when it is full, or [`DELAY`] after its first span came, however busy the queue.
    let mut due: Option<Instant> = None;
    loop {
        let wait = due.map_or(DELAY, |d| d.saturating_duration_since(Instant::now()));
        match spans.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                batch.push(*span);
                due.get_or_insert_with(|| Instant::now() + DELAY);
                if batch.len() >= BATCH {
                    export(&mut batch);
                    due = None;
                }
            }
            Ok(Message::Flush(done)) => {
                export(&mut batch);
                due = None;
                let _ = done.send(());
            }
            Ok(Message::Stop(done)) => {
                export(&mut batch);
                let _ = exporter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .shutdown();
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&mut batch);
                due = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&mut batch);
                return;
            }
        }
    }
}

impl<E: SpanExporter + 'static> SpanProcessor for QueuedExport<E> {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!(crate::metrics::TRACE_SPANS_DROPPED, "why" => "queue_full")
                    .increment(1)
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Message::Flush, Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Message::Stop, timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_resource(resource);
    }
}
