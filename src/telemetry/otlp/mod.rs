//! OTLP span export: spans encoded as protobuf when their call finishes, a bounded queue, and
//! one tokio task that sends them in batches over gRPC or HTTP/protobuf. (Metrics: [`push`].)
//!
//! A finished span is encoded into the queue's open batch; a full queue drops the span and
//! counts it in `tokenwarden_spans_dropped_total`, so a slow or dead collector never slows a
//! request. The task exports a batch when it is full or the schedule delay since the task saw
//! its first span is over, one export at a time. A failed export counts its spans as dropped
//! and backs off before the next attempt, so a collector that is down costs one connection
//! attempt per backoff period, not one per span.

pub mod batch;
pub mod env;
pub mod push;
pub mod queue;
pub mod transport;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, Counter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::OtlpConfig;
use crate::telemetry::metrics as m;

use batch::{Batch, Preamble};
use queue::SpanQueue;
pub use transport::ExporterError;
use transport::Transport;

/// Spans waiting for export before new ones are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
pub const DEFAULT_QUEUE: usize = 2048;
/// Largest batch per export call (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
pub const DEFAULT_BATCH: usize = 512;
/// Longest wait for a batch to fill (`OTEL_BSP_SCHEDULE_DELAY`, milliseconds). Shorter than the
/// SDK's 5 s so spans show up promptly; a full batch goes at once either way.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(200);
/// Longest schedule delay taken from `OTEL_BSP_SCHEDULE_DELAY`.
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// First pause after a failed export; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause between export attempts while the collector fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sends finished spans to the export task; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpanSink {
    queue: Arc<SpanQueue>,
    /// Flush requests; the export task also learns from it that every sink is gone.
    flush: mpsc::Sender<oneshot::Sender<()>>,
    /// `tokenwarden_spans_dropped_total`, looked up once: a down collector drops every span.
    dropped: Counter,
}

// === impl SpanSink ===

impl SpanSink {
    /// Queue the span `encode` writes (a `Span` message's content), encoded straight into its
    /// batch under the queue's lock, so `encode` must be quick; a full queue drops it
    /// (counted), never waits.
    pub fn submit_in_place(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        if !self.queue.push_in_place(encode) {
            self.dropped.increment(1);
        }
    }

    /// [`submit_in_place`](Self::submit_in_place) for a span that may take long to encode
    /// (captured content): encoded outside the lock, then copied in.
    pub fn submit_with(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        if !self.queue.push_with(encode) {
            self.dropped.increment(1);
        }
    }

    /// Whether the queue is full: a span finished now would be dropped, so it need not be built.
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// Count a span dropped before it was built (the queue was full).
    pub fn dropped(&self) {
        self.dropped.increment(1);
    }

    /// A sink whose queue the caller reads (unit tests).
    #[cfg(test)]
    pub(crate) fn for_test(capacity: usize) -> (Self, Arc<SpanQueue>) {
        let queue = Arc::new(SpanQueue::new(capacity, capacity));
        let (flush, _) = mpsc::channel(1);
        let dropped = counter!(m::SPANS_DROPPED_TOTAL);
        (
            Self {
                queue: queue.clone(),
                flush,
                dropped,
            },
            queue,
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
    let capacity = env::usize_var("OTEL_BSP_MAX_QUEUE_SIZE").unwrap_or(DEFAULT_QUEUE);
    let batch = env::usize_var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").unwrap_or(DEFAULT_BATCH);
    let queue = Arc::new(SpanQueue::new(capacity, batch));
    let (flush_tx, flush_rx) = mpsc::channel(4);
    // Capped so a deadline is always a representable instant.
    let delay = env::usize_var("OTEL_BSP_SCHEDULE_DELAY")
        .map_or(DEFAULT_DELAY, |ms| Duration::from_millis(ms as u64))
        .min(MAX_DELAY);
    let dropped = counter!(m::SPANS_DROPPED_TOTAL);
    let exporter = Exporter {
        transport,
        preamble,
        timeout,
        queue: queue.clone(),
        dropped: dropped.clone(),
        backoff: MIN_BACKOFF,
        failing: false,
        warned: false,
    };
    tokio::spawn(run(exporter, flush_rx, delay));
    Ok(SpanSink {
        queue,
        flush: flush_tx,
        dropped,
    })
}

/// The transport, what every request repeats, and how exports have been going.
struct Exporter {
    transport: Transport,
    preamble: Arc<Preamble>,
    timeout: Duration,
    queue: Arc<SpanQueue>,
    /// `tokenwarden_spans_dropped_total`, the same handle the sink counts with.
    dropped: Counter,
    /// Pause after the next failure.
    backoff: Duration,
    /// Whether the last export failed (failures are logged once per run of them).
    failing: bool,
    /// Whether the last export came back with a partial-success note: logged once per run of
    /// them, like failures, not once per batch.
    warned: bool,
}

impl Exporter {
    /// Send the oldest full batch (or, with `partial`, the open one when none is full); how
    /// many spans it held, `None` when there was nothing to send. With `pause`, a failure waits
    /// out the backoff before returning.
    async fn export_next(&mut self, partial: bool, pause: bool) -> Option<usize> {
        let spans = self.queue.take(partial)?;
        let n = spans.count;
        let request = Batch::new(self.preamble.clone(), spans).recycling_into(self.queue.clone());
        match self.transport.export(request, self.timeout).await {
            Ok(accepted) => {
                // A collector cannot reject more than it was sent.
                self.dropped.increment(accepted.rejected.min(n as u64));
                let note = accepted.rejected > 0 || !accepted.message.is_empty();
                if note && !std::mem::replace(&mut self.warned, true) {
                    tracing::warn!(
                        rejected = accepted.rejected,
                        message = %accepted.message,
                        "the collector rejected spans or warned (partial success); \
                         logged again only after a clean export"
                    );
                }
                self.warned &= note;
                self.backoff = MIN_BACKOFF;
                if std::mem::replace(&mut self.failing, false) {
                    tracing::info!("span export recovered");
                }
            }
            Err(e) => {
                self.dropped.increment(n as u64);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(error = %e, "span export failed; spans are dropped until it recovers");
                }
                if pause {
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        Some(n)
    }
}

/// The export loop: one export at a time; a batch goes when it is full, or when the delay
/// since the task first saw it is over; a flush sends everything queued.
async fn run(
    mut exporter: Exporter,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    delay: Duration,
) {
    let mut senders = true;
    let mut deadline: Option<Instant> = None;
    loop {
        if exporter.export_next(false, true).await.is_some() {
            // The spans still queued are newer: their delay starts now.
            deadline = None;
            continue;
        }
        if exporter.queue.is_empty() {
            deadline = None;
            if !senders {
                return; // every sink is gone and nothing is left
            }
        } else {
            let due = *deadline.get_or_insert_with(|| Instant::now() + delay);
            if !senders || Instant::now() >= due {
                deadline = None;
                exporter.export_next(true, true).await;
                continue;
            }
        }
        tokio::select! {
            // A full batch, or a first span that starts the delay.
            () = exporter.queue.ready() => {}
            () = sleep_until(deadline) => {}
            flush = flushes.recv(), if senders => match flush {
                Some(ack) => {
                    // As many spans as were queued when it came, batch by batch, without pausing
                    // on failure: the caller is waiting.
                    let mut left = exporter.queue.len();
                    while left > 0 {
                        match exporter.export_next(true, false).await {
                            Some(n) => left = left.saturating_sub(n),
                            None => break,
                        }
                    }
                    deadline = None;
                    let _ = ack.send(());
                }
                None => senders = false,
            },
        }
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
