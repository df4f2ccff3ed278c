//! Counters, the per-request guard that keeps them accurate, and the request recorder.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;

use super::MAX_RECORDED_BODY;

/// A snapshot of the mock's counters (requests to `/_mock/*` are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MockStats {
    /// Requests received.
    pub requests: u64,
    /// Responses whose body was handed out completely (error responses included).
    pub responses_completed: u64,
    /// Requests whose response (head or body) was dropped before the mock finished sending it,
    /// i.e. the client went away or reset the stream. Deliberate `drop-mid-stream` aborts are
    /// not counted here (nor as completed).
    pub streams_cancelled: u64,
    /// Requests currently being served.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    in_flight: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> MockStats {
        MockStats {
            requests: self.requests.load(Ordering::SeqCst),
            responses_completed: self.completed.load(Ordering::SeqCst),
            streams_cancelled: self.cancelled.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
        }
    }

    /// Resets the totals (not `in_flight`, which tracks live requests).
    pub(crate) fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
        self.completed.store(0, Ordering::SeqCst);
        self.cancelled.store(0, Ordering::SeqCst);
    }

    /// Counts a new request; the returned guard settles it.
    pub(crate) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        RequestGuard {
            counters: Arc::clone(self),
            settled: false,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The whole body was handed to the server connection.
    Completed,
    /// The mock aborted it on purpose (`drop-mid-stream`).
    Aborted,
}

/// Lives in the request handler and then in the response body. Settling it records the outcome;
/// dropping it unsettled means the client went away first, which counts as a cancelled stream.
#[derive(Debug)]
pub(crate) struct RequestGuard {
    counters: Arc<Counters>,
    settled: bool,
}

impl RequestGuard {
    pub(crate) fn settle(&mut self, outcome: Outcome) {
        if self.settled {
            return;
        }
        self.settled = true;
        if outcome == Outcome::Completed {
            self.counters.completed.fetch_add(1, Ordering::SeqCst);
        }
        self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if !self.settled {
            self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
            self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One request as the mock received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// Path and query, e.g. `/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every header in received order (names lower-cased by the HTTP stack; values lossy UTF-8).
    pub headers: Vec<(String, String)>,
    /// The body, or empty when it was larger than [`MAX_RECORDED_BODY`].
    pub body: Bytes,
    /// The body's real length.
    pub body_len: usize,
}

impl RecordedRequest {
    pub(crate) fn new(parts: &http::request::Parts, body: &Bytes) -> Self {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Self {
            method: parts.method.as_str().to_owned(),
            path,
            version: format!("{:?}", parts.version),
            headers,
            body: if body.len() <= MAX_RECORDED_BODY {
                body.clone()
            } else {
                Bytes::new()
            },
            body_len: body.len(),
        }
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, in received order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The JSON shape served at `/_mock/last_request`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "method": self.method,
            "path": self.path,
            "version": self.version,
            "headers": self.headers,
            "body": self.body_text(),
            "body_len": self.body_len,
            "body_recorded": self.body.len() == self.body_len,
        })
    }
}

/// A bounded ring of recorded requests.
#[derive(Debug)]
pub(crate) struct Recorder {
    enabled: bool,
    cap: usize,
    ring: Mutex<VecDeque<RecordedRequest>>,
}

impl Recorder {
    pub(crate) fn new(enabled: bool, cap: usize) -> Self {
        Self {
            enabled: enabled && cap > 0,
            cap,
            ring: Mutex::new(VecDeque::with_capacity(cap.min(1024))),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn record(&self, parts: &http::request::Parts, body: &Bytes) {
        if !self.enabled {
            return;
        }
        let rec = RecordedRequest::new(parts, body);
        let mut ring = self.ring();
        if ring.len() >= self.cap {
            ring.pop_front();
        }
        ring.push_back(rec);
    }

    pub(crate) fn last(&self) -> Option<RecordedRequest> {
        self.ring().back().cloned()
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        self.ring().iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.ring().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> http::request::Parts {
        let (p, ()) = http::Request::post(uri)
            .header("x-a", "1")
            .header("x-a", "2")
            .header("authorization", "Bearer sk-test")
            .body(())
            .unwrap()
            .into_parts();
        p
    }

    #[test]
    fn guard_counts_each_outcome_once() {
        let c = Arc::new(Counters::default());
        let mut g = c.begin();
        assert_eq!(c.snapshot().in_flight, 1);
        g.settle(Outcome::Completed);
        g.settle(Outcome::Completed);
        drop(g);
        let mut g = c.begin();
        g.settle(Outcome::Aborted);
        drop(g);
        drop(c.begin());
        assert_eq!(
            c.snapshot(),
            MockStats {
                requests: 3,
                responses_completed: 1,
                streams_cancelled: 1,
                in_flight: 0
            }
        );
        c.reset();
        assert_eq!(c.snapshot(), MockStats::default());
    }

    #[test]
    fn recorder_is_bounded_and_skips_big_bodies() {
        let r = Recorder::new(true, 2);
        for i in 0..3 {
            r.record(&parts(&format!("/v1/x?i={i}")), &Bytes::from_static(b"{}"));
        }
        let all = r.all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].path, "/v1/x?i=1");
        let last = r.last().unwrap();
        assert_eq!(last.path, "/v1/x?i=2");
        assert_eq!(last.method, "POST");
        assert_eq!(last.header("X-A"), Some("1"));
        assert_eq!(last.header_all("x-a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(last.body_json(), Some(serde_json::json!({})));

        let big = Bytes::from(vec![b'a'; MAX_RECORDED_BODY + 1]);
        r.record(&parts("/big"), &big);
        let last = r.last().unwrap();
        assert!(last.body.is_empty());
        assert_eq!(last.body_len, MAX_RECORDED_BODY + 1);
        assert_eq!(last.to_json()["body_recorded"], false);
        r.clear();
        assert!(r.last().is_none());

        let off = Recorder::new(false, 10);
        off.record(&parts("/x"), &Bytes::new());
        assert!(off.all().is_empty());
    }
}
