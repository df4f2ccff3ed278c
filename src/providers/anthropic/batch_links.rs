//! A Message Batch's `results_url`, pointed at the proxy.
//!
//! The API states where a batch's results are as an absolute URL on its own host
//! (`https://api.anthropic.com/v1/messages/batches/{id}/results`), and the SDKs'
//! `batches.results()` retrieve the batch and then download that URL, not one under the
//! client's base URL: the download, the only place a batch states what it spent, would bypass
//! the sidecar. So in the batch objects the API answers with (a retrieve, a list, a cancel), each
//! such `results_url` is rewritten to the same path under the proxy's URL the client used; every
//! other byte is kept.

/// `/messages/batches`, where the batch paths start under the client's base URL.
const BATCHES: &str = "/messages/batches";

/// Where the batch path starts in `path` when a response to it holds batch objects (the list,
/// one batch, a cancel), so the URL prefix the client used is `path[..n]`; `None` for any other
/// path (the results download among them).
pub(super) fn names_links(path: &str) -> Option<usize> {
    let n = path.rfind(BATCHES)?;
    let rest = &path[n + BATCHES.len()..];
    let one = |id: &str| !id.is_empty() && !id.contains('/');
    let holds_batches = match rest.strip_prefix('/') {
        None => rest.is_empty(),
        Some(r) => match r.split_once('/') {
            None => one(r),
            Some((id, "cancel")) => one(id),
            Some(_) => false,
        },
    };
    holds_batches.then_some(n)
}

/// `body` with every `results_url` naming a batch's results pointed at `base` (the proxy's
/// URL and the client's prefix: `http://127.0.0.1:8080/v1`); `None` when none does.
pub(super) fn point_results_urls(body: &[u8], base: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &body[i..]) {
        let start = i + q;
        let end = string_end(body, start)?;
        i = end;
        if &body[start + 1..end - 1] != b"results_url" {
            continue;
        }
        let colon = skip_ws(body, end);
        if body.get(colon) != Some(&b':') {
            continue;
        }
        let v = skip_ws(body, colon + 1);
        if body.get(v) != Some(&b'"') {
            continue;
        }
        let v_end = string_end(body, v)?;
        i = v_end;
        let Ok(url) = serde_json::from_slice::<String>(&body[v..v_end]) else {
            continue;
        };
        let Some(id) = results_id(&url) else {
            continue;
        };
        let Ok(new) = serde_json::to_string(&format!("{base}{BATCHES}/{id}/results")) else {
            continue;
        };
        out.extend_from_slice(&body[copied..v]);
        out.extend_from_slice(new.as_bytes());
        copied = v_end;
    }
    if copied == 0 {
        return None;
    }
    out.extend_from_slice(&body[copied..]);
    Some(out)
}

/// The batch id of a results URL (`…/messages/batches/{id}/results`): letters, digits, `_`
/// and `-` only, since it goes into a URL the client then fetches.
fn results_id(url: &str) -> Option<&str> {
    let rest = &url[url.rfind("/messages/batches/")? + BATCHES.len() + 1..];
    let id = rest.strip_suffix("/results")?;
    let safe = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    (!id.is_empty() && id.bytes().all(safe)).then_some(id)
}

/// The index just past the string starting with the quote at `start`; `None` when it never ends.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[j] == b'\\' {
            j += 2;
        } else {
            return Some(j + 1);
        }
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_object_paths_are_told_from_the_rest() {
        assert_eq!(names_links("/v1/messages/batches"), Some(3));
        assert_eq!(
            names_links("/anthropic/v1/messages/batches/msgbatch_1"),
            Some(13)
        );
        assert_eq!(
            names_links("/v1/messages/batches/msgbatch_1/cancel"),
            Some(3)
        );
        assert_eq!(names_links("/v1/messages/batches/msgbatch_1/results"), None);
        assert_eq!(names_links("/v1/messages/batches/"), None);
        assert_eq!(names_links("/v1/messages"), None);
        assert_eq!(names_links("/v1/messages/batches/a/b/cancel"), None);
    }

    #[test]
    fn results_urls_point_at_the_proxy_and_nothing_else_changes() {
        let body = br#"{"id":"msgbatch_01","type":"message_batch","processing_status":"ended","note":"\"results_url\": no","results_url" : "https:\/\/api.anthropic.com\/v1\/messages\/batches\/msgbatch_01\/results","archived_at":null}"#;
        let out = point_results_urls(body, "http://127.0.0.1:8080/llm/v1").unwrap();
        let want = br#"{"id":"msgbatch_01","type":"message_batch","processing_status":"ended","note":"\"results_url\": no","results_url" : "http://127.0.0.1:8080/llm/v1/messages/batches/msgbatch_01/results","archived_at":null}"#;
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want));
        // A list: every batch's.
        let list = br#"{"data":[{"id":"a","results_url":"https://api.anthropic.com/v1/messages/batches/a/results"},{"id":"b","results_url":null}],"has_more":false}"#;
        let out = String::from_utf8(point_results_urls(list, "http://h/v1").unwrap()).unwrap();
        assert!(
            out.contains(r#""results_url":"http://h/v1/messages/batches/a/results""#),
            "{out}"
        );
        assert!(out.contains(r#""results_url":null"#));
        // Nothing to point: untouched.
        assert_eq!(
            point_results_urls(br#"{"results_url":null}"#, "http://h"),
            None
        );
        assert_eq!(
            point_results_urls(
                br#"{"results_url":"https://x/v1/messages/batches/a%2F..%2Fb/results"}"#,
                "http://h"
            ),
            None
        );
        assert_eq!(
            point_results_urls(br#"{"results_url":"unterminated"#, "http://h"),
            None
        );
        assert_eq!(point_results_urls(b"", "http://h"), None);
    }
}
