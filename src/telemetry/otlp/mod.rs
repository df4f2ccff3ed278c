//! OTLP span export: spans encoded as protobuf when their call finishes, a bounded queue, and
//! one tokio task that sends them in batches over gRPC or HTTP/protobuf.
//!
//! Finished spans go into a bounded channel with `try_send`: a full queue drops the span and
//! counts it in `tokenwarden_spans_dropped_total`, so a slow or dead collector never slows a
//! request. The task exports a batch when it is full or the schedule delay since its first span
//! is over, one export at a time. A failed export counts its spans
//! as dropped and backs off before the next attempt, so a collector that is down costs one
//! connection attempt per backoff period, not one per span.

pub mod batch;
pub mod buffers;
pub mod env;
pub mod transport;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, Counter};
use tokio::sync::{mpsc, oneshot};

use crate::config::OtlpConfig;
use crate::telemetry::metrics as m;

use batch::{Batch, Preamble};
use buffers::SpanBuffers;
use transport::Transport;

/// Spans waiting for export before new ones are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
pub const DEFAULT_QUEUE: usize = 2048;
/// Largest batch per export call (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
pub const DEFAULT_BATCH: usize = 512;
/// Longest wait for a batch to fill (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds). Shorter than the
/// SDK's 5 s so spans show up promptly; a full batch goes at once either way.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(200);
/// How often a forming batch checks whether it is full.
const LINGER_TICK: Duration = Duration::from_millis(10);
/// First pause after a failed export; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between export attempts while the collector fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The exporter could not be built from the config.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct ExporterError(String);

/// One finished span, encoded (the content of an OTLP `Span` message).
pub type EncodedSpan = Vec<u8>;

/// Sends finished spans to the export task; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpanSink {
    spans: mpsc::Sender<EncodedSpan>,
    buffers: Arc<SpanBuffers>,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    /// `tokenwarden_spans_dropped_total`, looked up once: a down collector drops every span.
    dropped: Counter,
}

// === impl SpanSink ===

impl SpanSink {
    /// An empty buffer to encode a span into (one the export task has sent, when there is one).
    pub fn buffer(&self) -> Vec<u8> {
        self.buffers.take()
    }

    /// Queue a finished span; a full queue drops it (counted), never waits.
    pub fn submit(&self, span: EncodedSpan) {
        if self.spans.try_send(span).is_err() {
            self.dropped.increment(1);
        }
    }

    /// Whether the queue is full: a span finished now would be dropped, so it need not be built.
    pub fn is_full(&self) -> bool {
        self.spans.capacity() == 0
    }

    /// Count a span dropped before it was built (the queue was full).
    pub fn dropped(&self) {
        self.dropped.increment(1);
    }

    /// A sink whose spans the caller reads (unit tests).
    #[cfg(test)]
    pub(crate) fn for_test(capacity: usize) -> (Self, mpsc::Receiver<EncodedSpan>) {
        let (spans, rx) = mpsc::channel(capacity);
        let (flush, _) = mpsc::channel(1);
        let dropped = counter!(m::SPANS_DROPPED_TOTAL);
        (
            Self {
                spans,
                buffers: Arc::default(),
                flush,
                dropped,
            },
            rx,
        )
    }

    /// Export everything queued so far; waits at most `within`.
    pub async fn flush(&self, within: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.flush.try_send(tx).is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}

/// Build the exporter for `config` and start the export task on the current runtime.
pub fn start(config: &OtlpConfig, service_name: &str) -> Result<SpanSink, ExporterError> {
    let timeout = env::export_timeout();
    let transport = Transport::new(config, timeout, env::headers(), env::certificate())?;
    let preamble = Arc::new(Preamble::new(&env::resource_attributes(service_name)));
    let queue = env::usize_var("OTEL_BSP_MAX_QUEUE_SIZE").unwrap_or(DEFAULT_QUEUE);
    let batch = env::usize_var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
        .unwrap_or(DEFAULT_BATCH)
        .min(queue);
    let (spans_tx, spans_rx) = mpsc::channel(queue.max(1));
    let (flush_tx, flush_rx) = mpsc::channel(4);
    let delay = env::usize_var("OTEL_BSP_SCHEDULE_DELAY")
        .map_or(DEFAULT_DELAY, |ms| Duration::from_millis(ms as u64));
    let buffers = Arc::new(SpanBuffers::new(queue));
    let dropped = counter!(m::SPANS_DROPPED_TOTAL);
    let exporter = Exporter {
        transport,
        preamble,
        timeout,
        buffers: buffers.clone(),
        dropped: dropped.clone(),
    };
    tokio::spawn(run(exporter, spans_rx, flush_rx, batch.max(1), delay));
    Ok(SpanSink {
        spans: spans_tx,
        buffers,
        flush: flush_tx,
        dropped,
    })
}

/// The transport and what every request repeats.
struct Exporter {
    transport: Transport,
    preamble: Arc<Preamble>,
    timeout: Duration,
    /// Where sent spans' buffers go back to.
    buffers: Arc<SpanBuffers>,
    /// `tokenwarden_spans_dropped_total`, the same handle the sink counts with.
    dropped: Counter,
}

/// The export loop: one export at a time, batches of what is queued, backoff on failure.
async fn run(
    mut exporter: Exporter,
    mut spans: mpsc::Receiver<EncodedSpan>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    batch_size: usize,
    delay: Duration,
) {
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    // Whether the last export came back with a partial-success note: logged once per run of
    // them, like failures, not once per batch.
    let mut warned = false;
    loop {
        let mut batch = Vec::with_capacity(batch_size);
        let mut ack = None;
        tokio::select! {
            n = spans.recv_many(&mut batch, batch_size) => {
                if n == 0 {
                    return; // every sender is gone
                }
            }
            Some(tx) = flushes.recv() => {
                take_queued(&mut spans, &mut batch, batch_size);
                ack = Some(tx);
            }
        }
        if ack.is_none() {
            // Let a batch form: until it is full or the delay since its first span is over.
            // Polled on a coarse tick rather than woken per span, so queueing a span never
            // wakes this task.
            let deadline = tokio::time::Instant::now() + delay;
            while batch.len() + spans.len() < batch_size {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep((deadline - now).min(LINGER_TICK)) => {}
                    Some(tx) = flushes.recv() => {
                        ack = Some(tx);
                        break;
                    }
                }
            }
            take_queued(&mut spans, &mut batch, batch_size);
        }
        loop {
            let n = batch.len();
            if n > 0 {
                let request = Batch::new(exporter.preamble.clone(), std::mem::take(&mut batch))
                    .recycling_into(exporter.buffers.clone());
                match exporter.transport.export(request, exporter.timeout).await {
                    Ok(accepted) => {
                        exporter.dropped.increment(accepted.rejected);
                        let note = accepted.rejected > 0 || !accepted.message.is_empty();
                        if note && !std::mem::replace(&mut warned, true) {
                            tracing::warn!(
                                rejected = accepted.rejected,
                                message = %accepted.message,
                                "the collector rejected spans or warned (partial success); \
                                 logged again only after a clean export"
                            );
                        }
                        warned &= note;
                        backoff = MIN_BACKOFF;
                        if std::mem::replace(&mut failing, false) {
                            tracing::info!("span export recovered");
                        }
                    }
                    Err(e) => {
                        exporter.dropped.increment(n as u64);
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(error = %e, "span export failed; spans are dropped until it recovers");
                        }
                        if ack.is_none() {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            }
            // A flush exports everything queued before it was asked for, batch by batch.
            if ack.is_some() && !spans.is_empty() {
                take_queued(&mut spans, &mut batch, batch_size);
                continue;
            }
            break;
        }
        if let Some(tx) = ack {
            let _ = tx.send(());
        }
    }
}

/// Move what is queued right now (up to `max`) into `batch`, without waiting.
fn take_queued(spans: &mut mpsc::Receiver<EncodedSpan>, batch: &mut Vec<EncodedSpan>, max: usize) {
    while batch.len() < max {
        match spans.try_recv() {
            Ok(s) => batch.push(s),
            Err(_) => break,
        }
    }
}
