//! Hop-by-hop header removal, applied in both directions.
//!
//! RFC 9110 §7.6.1: `Connection` and every header it names belong to one hop only. Everything
//! else — the client's own `Authorization` and `x-api-key` included — passes unchanged.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that never cross the proxy, whatever `Connection` says. A `static`: a `const` array
/// was built and dropped again at every use (each name of every message).
static FIXED: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Remove hop-by-hop headers: those named by `Connection`, the fixed set, and every `Proxy-*`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none (only a chunked body's `Transfer-Encoding`, often): one walk of
    // the few names decides, where a removal per fixed name hashed each.
    if !headers.keys().any(|k| is_hop(k) || is_proxy_header(k)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    // RFC 9112 §6.3: Transfer-Encoding frames the message whatever Content-Length says. Once the
    // encoding is removed here, a Content-Length left beside it would frame the body again on
    // the next hop, cutting it short (or waiting for bytes that never come).
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    for n in &FIXED {
        headers.remove(n);
    }
    // Rare in LLM traffic: only walk the names when one is there.
    if headers.keys().any(is_proxy_header) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| is_proxy_header(k))
            .cloned()
            .collect();
        for n in proxy {
            headers.remove(n);
        }
    }
}

/// Whether the request's SigV4 signature covers `Accept-Encoding` (an `AWS4-HMAC-SHA256`
/// `Authorization` listing it in `SignedHeaders`): such a header must go up as signed. Only a
/// SigV4 scheme counts — any other text naming it is not a signature.
pub fn signs_accept_encoding(headers: &HeaderMap) -> bool {
    let Some(auth) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let auth = auth.as_bytes();
    if !auth.starts_with(b"AWS4-HMAC-SHA256 ") {
        return false;
    }
    let Some(at) = memchr::memmem::find(auth, b"SignedHeaders=") else {
        return false;
    };
    let list = &auth[at + b"SignedHeaders=".len()..];
    let end = list
        .iter()
        .position(|&b| b == b',' || b == b' ')
        .unwrap_or(list.len());
    list[..end]
        .split(|&b| b == b';')
        .any(|h| h.eq_ignore_ascii_case(b"accept-encoding"))
}

/// One of [`FIXED`]: decided on the name's text by length and bytes, where comparing it with
/// six `HeaderName`s took a comparison of each.
fn is_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "keep-alive"
    )
}

fn is_proxy_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("proxy-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_sigv4_signature_covering_accept_encoding_is_seen() {
        let with = |auth: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(auth));
            signs_accept_encoding(&h)
        };
        assert!(with("AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/bedrock/aws4_request, SignedHeaders=accept-encoding;host;x-amz-date, Signature=ab"));
        assert!(with(
            "AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host;Accept-Encoding, Signature=ab"
        ));
        assert!(!with(
            "AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host;x-amz-date, Signature=ab"
        ));
        assert!(!with("Bearer accept-encoding"));
        // Text naming it under another scheme is no signature (a client could keep gzip and
        // turn a blocking policy into a flag with it).
        assert!(!with("X SignedHeaders=accept-encoding"));
        assert!(!signs_accept_encoding(&HeaderMap::new()));
    }

    #[test]
    fn strips_named_and_fixed_keeps_credentials() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("trailer", HeaderValue::from_static("x"));
        h.insert("authorization", HeaderValue::from_static("Bearer sk-1"));
        h.insert("x-api-key", HeaderValue::from_static("k"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "content-type", "x-api-key"]);
    }

    #[test]
    fn each_fixed_header_alone_is_stripped_and_nothing_else() {
        for name in &FIXED {
            assert!(is_hop(name), "{name}");
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            h.insert("x-request-id", HeaderValue::from_static("r"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.keys().collect::<Vec<_>>(), ["x-request-id"], "{name}");
        }
        for name in [
            "content-length",
            "teapot",
            "keep-alive-x",
            "trailers",
            "x-upgrade",
        ] {
            assert!(!is_hop(&HeaderName::from_static(name)), "{name}");
        }
    }
}
