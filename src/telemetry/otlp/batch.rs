//! One export request (`ExportTraceServiceRequest`): the resource and scope, encoded once at
//! startup, around a batch of spans each encoded when its call finished.

use std::sync::Arc;

use bytes::{BufMut, Bytes};

use super::queue::{SpanBatch, SpanQueue};
use super::wire::{len_field, put_bytes, put_len_prefix, put_str, Attrs};

/// The encoded `Resource` and `InstrumentationScope` every request repeats.
#[derive(Debug)]
pub struct Preamble {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Preamble {
    /// The resource with `attributes`, and our instrumentation scope.
    pub fn new(attributes: &[(String, String)]) -> Self {
        let mut resource = Vec::new();
        let mut attrs = Attrs::new(&mut resource, 1);
        for (k, v) in attributes {
            attrs.str(k, v);
        }
        let mut scope = Vec::new();
        put_str(&mut scope, 1, "tokenwarden");
        put_str(&mut scope, 2, env!("CARGO_PKG_VERSION"));
        Self { resource, scope }
    }
}

/// One export request's spans, with the resource and scope that go around them.
#[derive(Debug)]
pub struct Batch {
    preamble: Arc<Preamble>,
    spans: SpanBatch,
    /// Where the spans' buffer goes once the batch is written (or given up).
    recycle: Option<Arc<SpanQueue>>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(queue) = &self.recycle {
            queue.recycle(std::mem::take(&mut self.spans.bytes));
        }
    }
}

/// A sent batch's buffer on its way back to the queue.
struct Recycled {
    bytes: Vec<u8>,
    queue: Arc<SpanQueue>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.queue.recycle(std::mem::take(&mut self.bytes));
    }
}

impl Batch {
    /// A request carrying `spans`.
    pub fn new(preamble: Arc<Preamble>, spans: SpanBatch) -> Self {
        Self {
            preamble,
            spans,
            recycle: None,
        }
    }

    /// Hand the spans' buffer back to `queue` for reuse when the batch is dropped.
    pub fn recycling_into(mut self, queue: Arc<SpanQueue>) -> Self {
        self.recycle = Some(queue);
        self
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.spans.count
    }

    /// Whether there are no spans.
    pub fn is_empty(&self) -> bool {
        self.spans.count == 0
    }

    fn scope_spans_len(&self) -> usize {
        len_field(self.preamble.scope.len()) + self.spans.bytes.len()
    }

    fn resource_spans_len(&self) -> usize {
        len_field(self.preamble.resource.len()) + len_field(self.scope_spans_len())
    }

    /// Size of the encoded request.
    pub fn encoded_len(&self) -> usize {
        len_field(self.resource_spans_len())
    }

    /// Write the request: one `ResourceSpans` holding one `ScopeSpans` with every span.
    pub fn encode(&self, buf: &mut impl BufMut) {
        self.encode_head(buf);
        buf.put_slice(&self.spans.bytes); // .spans, framed as they were queued
    }

    /// Everything before the spans.
    fn encode_head(&self, buf: &mut impl BufMut) {
        put_len_prefix(buf, 1, self.resource_spans_len()); // resource_spans
        put_bytes(buf, 1, &self.preamble.resource); // .resource
        put_len_prefix(buf, 2, self.scope_spans_len()); // .scope_spans
        put_bytes(buf, 1, &self.preamble.scope); // .scope
    }

    /// The request as what precedes the spans and the spans' own buffer, for a transport
    /// that writes both without copying them into one. The buffer still goes back to the
    /// queue, once the transport drops it.
    pub fn into_parts(mut self) -> (Bytes, Bytes) {
        let mut head = Vec::with_capacity(self.encoded_len() - self.spans.bytes.len());
        self.encode_head(&mut head);
        let bytes = std::mem::take(&mut self.spans.bytes);
        let spans = match self.recycle.take() {
            Some(queue) => Bytes::from_owner(Recycled { bytes, queue }),
            None => Bytes::from(bytes),
        };
        (Bytes::from(head), spans)
    }

    /// The encoded request in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::otlp::wire::put_uint;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    #[test]
    fn request_decodes_with_every_span_under_one_resource_and_scope() {
        let preamble = Arc::new(Preamble::new(&[
            ("service.name".into(), "svc".into()),
            ("k8s.pod.name".into(), "p".repeat(300)),
        ]));
        let queue = SpanQueue::new(200, 200);
        for i in 0..200 {
            let mut s = Vec::new();
            put_str(&mut s, 5, &format!("span {i}"));
            put_uint(&mut s, 6, 3);
            assert!(queue.push(&s));
        }
        let batch = Batch::new(preamble, queue.take(false).expect("a full batch"));
        let bytes = batch.to_vec();
        assert_eq!(bytes.len(), batch.encoded_len());
        let req = ExportTraceServiceRequest::decode(&bytes[..]).expect("decodes");
        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let attrs = &rs.resource.as_ref().expect("resource").attributes;
        assert_eq!(attrs[0].key, "service.name");
        assert_eq!(attrs[1].key, "k8s.pod.name");
        assert_eq!(rs.scope_spans.len(), 1);
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().expect("scope");
        assert_eq!(scope.name, "tokenwarden");
        assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(ss.spans.len(), 200);
        assert_eq!(ss.spans[199].name, "span 199");
        assert_eq!(ss.spans[0].kind, 3);
    }

    #[test]
    fn parts_are_the_request_and_the_spans_buffer_goes_back_when_dropped() {
        let queue = Arc::new(SpanQueue::new(4, 2));
        let preamble = Arc::new(Preamble::new(&[("service.name".into(), "svc".into())]));
        queue.push(&[1, 2, 3]);
        queue.push(&[4]);
        let spans = queue.take(false).expect("a full batch");
        let ptr = spans.bytes.as_ptr();
        let whole = Batch::new(
            preamble.clone(),
            SpanBatch {
                bytes: spans.bytes.clone(),
                count: 2,
            },
        )
        .to_vec();
        let (head, body) = Batch::new(preamble, spans)
            .recycling_into(queue.clone())
            .into_parts();
        assert_eq!(body.as_ptr(), ptr, "the spans are not copied");
        assert_eq!([&head[..], &body[..]].concat(), whole);
        // While the transport holds the body, new batches get other buffers.
        queue.push(&[5]);
        queue.push(&[6]);
        queue.push(&[7]);
        assert_ne!(queue.take(false).expect("full").bytes.as_ptr(), ptr);
        assert_ne!(queue.take(true).expect("open").bytes.as_ptr(), ptr);
        drop(body);
        queue.push(&[8]);
        queue.push(&[9]); // this batch closes and the recycled buffer opens the next
        queue.push(&[10]);
        let _ = queue.take(false);
        assert_eq!(queue.take(true).expect("open").bytes.as_ptr(), ptr);
    }

    #[test]
    fn a_dropped_batch_returns_its_buffer() {
        let queue = Arc::new(SpanQueue::new(4, 2));
        let preamble = Arc::new(Preamble::new(&[]));
        queue.push(&[1, 2, 3]);
        queue.push(&[4]);
        let spans = queue.take(false).expect("a full batch");
        let ptr = spans.bytes.as_ptr();
        let batch = Batch::new(preamble, spans).recycling_into(queue.clone());
        assert_eq!(batch.len(), 2);
        assert!(!batch.to_vec().is_empty());
        drop(batch);
        queue.push(&[5]);
        queue.push(&[6]);
        queue.push(&[7]); // opens a batch in the recycled buffer
        let _ = queue.take(false);
        let open = queue.take(true).expect("the open batch");
        assert_eq!(open.bytes.as_ptr(), ptr);
    }
}
