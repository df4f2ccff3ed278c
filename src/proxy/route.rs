//! The route table: path prefix → upstream, first match wins.

use std::sync::Arc;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use crate::config::{Config, RouteConfig, UpstreamConfig};

use crate::http_client::driven::Driven;
use crate::http_client::{self as upstream, Pools};
use crate::providers::protocol::RouteProtocol;

/// One configured route, ready to serve.
pub struct Route {
    /// Route name (metric label).
    pub name: Arc<str>,
    prefix: String,
    strip: bool,
    scheme: Scheme,
    /// Upstream `host[:port]`, sent as `Host` / `:authority`.
    pub authority: Authority,
    /// Upstream host alone (`server.address` on spans), shared rather than copied per call.
    pub host: Arc<str>,
    /// Upstream port: the URL's, else the scheme's default (read once: parsing it from the
    /// authority was ~300 instructions a call).
    port: u16,
    base_path: String,
    /// Configured protocol.
    pub protocol: RouteProtocol,
    /// Agent name for requests without an agent header.
    pub agent: Option<Arc<str>>,
    /// Effective timeouts.
    pub timeouts: UpstreamConfig,
    /// Pooled clients for this upstream, one per worker.
    pub client: Pools,
    /// HTTP/1.1-only clients for WebSocket upgrades (connect only when one comes).
    pub upgrade_client: Pools,
    /// For an `http://` upstream: connections the request's task drives (calls other than
    /// upgrades go there instead of `client`).
    pub driven: Option<Driven>,
}

/// All routes, in config order.
pub struct Router {
    routes: Vec<Arc<Route>>,
}

/// A route could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The upstream URL is unusable.
    #[error("route '{route}': upstream {url:?}: {reason}")]
    BadUpstream {
        /// Route name.
        route: String,
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The protocol is none the provider registry knows.
    #[error("route '{route}': unknown protocol {protocol:?} (one of: {known})")]
    UnknownProtocol {
        /// Route name.
        route: String,
        /// The configured value.
        protocol: String,
        /// The values accepted.
        known: String,
    },
    /// The TLS client could not be built.
    #[error("route '{route}': {source}")]
    Tls {
        /// Route name.
        route: String,
        /// The cause.
        source: upstream::TlsError,
    },
}

// === impl Router ===

impl Router {
    /// Build every route of `config`, with its pooled client.
    pub fn from_config(config: &Config) -> Result<Self, RouteError> {
        let routes = config
            .routes
            .iter()
            .map(|r| Route::build(r, &config.upstream, config.server.pools()).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self { routes })
    }

    /// The first route whose prefix matches `path` on a segment boundary.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.matches(path))
    }
}

// === impl Route ===

impl Route {
    /// Upstream port: the URL's, else the scheme's default (`server.port` on spans).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn build(
        cfg: &RouteConfig,
        upstream: &UpstreamConfig,
        pools: usize,
    ) -> Result<Self, RouteError> {
        let bad = |reason: &str| RouteError::BadUpstream {
            route: cfg.name.clone(),
            url: cfg.upstream.clone(),
            reason: reason.to_string(),
        };
        let uri: Uri = cfg.upstream.parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
        let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
        let base_path = uri.path().trim_end_matches('/').to_string();
        let timeouts = upstream.with_override(cfg.timeouts.as_ref());
        let tls = |source| RouteError::Tls {
            route: cfg.name.clone(),
            source,
        };
        let ca = cfg.ca_file.as_deref();
        let client = upstream::build_pools(ca, &timeouts, true, pools).map_err(tls)?;
        let upgrade_client = upstream::build_pools(ca, &timeouts, false, pools).map_err(tls)?;
        let driven = (scheme == Scheme::HTTP).then(|| Driven::new(&authority, &timeouts, pools));
        let prefix = cfg.path_prefix.trim_end_matches('/').to_string();
        let protocol =
            RouteProtocol::named(&cfg.protocol).ok_or_else(|| RouteError::UnknownProtocol {
                route: cfg.name.clone(),
                protocol: cfg.protocol.clone(),
                known: RouteProtocol::names().join(", "),
            })?;
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
        Ok(Self {
            name: Arc::from(cfg.name.as_str()),
            prefix,
            strip: cfg.strip_prefix,
            scheme,
            host: Arc::from(authority.host()),
            port,
            authority,
            base_path,
            protocol,
            agent: cfg.agent.as_deref().map(Arc::from),
            timeouts,
            client,
            upgrade_client,
            driven,
        })
    }

    fn matches(&self, path: &str) -> bool {
        // An empty prefix is the catch-all `/`.
        self.prefix.is_empty()
            || (path.starts_with(&self.prefix)
                && matches!(path.as_bytes().get(self.prefix.len()), None | Some(b'/')))
    }

    /// The path as the upstream sees it (prefix stripped when configured, base path prepended).
    pub fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        let rest = if self.strip {
            match &path[self.prefix.len().min(path.len())..] {
                "" => "/",
                r => r,
            }
        } else {
            path
        };
        if self.base_path.is_empty() {
            std::borrow::Cow::Borrowed(rest)
        } else {
            std::borrow::Cow::Owned(format!("{}{}", self.base_path, rest))
        }
    }

    /// The full upstream URI for a request's path and query.
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let upath = self.upstream_path(path);
        let pq: PathAndQuery = match query {
            Some(q) => format!("{upath}?{q}").parse()?,
            None => upath.parse()?,
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// The path as the upstream will serve it, for classifying the call: percent-escapes decoded and
/// dot segments resolved, as servers (uvicorn, gin, nginx) do before routing. The request still
/// goes up with its path as sent (a SigV4 signature covers it); only what the proxy reads of it
/// changes, so that `/v1/chat/complet%69ons` is not an unread "other" call.
pub fn as_served(path: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
    // A percent sign, a dot right after a slash, or two slashes (short paths: one vector search).
    let p = path.as_bytes();
    let unusual = memchr::memchr3_iter(b'%', b'.', b'/', p).any(|i| match p[i] {
        b'%' => true,
        b'.' => i > 0 && p[i - 1] == b'/',
        _ => p.get(i + 1) == Some(&b'/'),
    });
    if !unusual {
        return path;
    }
    let decoded = percent_encoding::percent_decode_str(&path)
        .decode_utf8_lossy()
        .into_owned();
    let mut out: Vec<&str> = Vec::new();
    let mut segments = decoded.split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            // Empty segments between slashes merge (nginx's `merge_slashes`); the leading one
            // (the path's root) and a trailing one stay.
            "" if !out.is_empty() && !last => {}
            "." => {}
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
            }
            s => out.push(s),
        }
        // A trailing `.` or `..` leaves the path ending in a slash.
        if last && (seg == "." || seg == "..") {
            out.push("");
        }
    }
    std::borrow::Cow::Owned(out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_classified_as_the_upstream_serves_it() {
        let served = |p: &str| as_served(std::borrow::Cow::Borrowed(p)).into_owned();
        assert_eq!(served("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(served("/v1/chat/complet%69ons"), "/v1/chat/completions");
        assert_eq!(served("/v1/%6Dessages"), "/v1/messages");
        assert_eq!(served("/v1/x/../chat/completions"), "/v1/chat/completions");
        assert_eq!(served("/v1/./chat/./completions"), "/v1/chat/completions");
        assert_eq!(served("/../../v1/messages"), "/v1/messages");
        assert_eq!(served("/v1/models/.."), "/v1/");
        assert_eq!(served("/v1/bad%zz%"), "/v1/bad%zz%");
        assert_eq!(served("/v1/chat//completions"), "/v1/chat/completions");
        assert_eq!(served("//v1///messages"), "/v1/messages");
        assert_eq!(served("/v1/models/"), "/v1/models/");
        assert_eq!(
            served("/v1beta/models/gemini:generateContent"),
            "/v1beta/models/gemini:generateContent"
        );
    }
    use crate::config::load_from_str;

    fn router(yaml: &str) -> Router {
        Router::from_config(&load_from_str(yaml, "t").unwrap()).unwrap()
    }

    const TWO: &str = "routes:\n  - name: anthropic\n    path_prefix: /anthropic\n    strip_prefix: true\n    upstream: https://api.anthropic.com\n  - name: openai\n    path_prefix: /\n    upstream: http://127.0.0.1:9/base/\n";

    #[test]
    fn first_match_on_segment_boundary() {
        let r = router(TWO);
        assert_eq!(
            &*r.find("/anthropic/v1/messages").unwrap().name,
            "anthropic"
        );
        assert_eq!(&*r.find("/anthropic").unwrap().name, "anthropic");
        assert_eq!(&*r.find("/anthropicx/v1").unwrap().name, "openai");
        assert_eq!(&*r.find("/v1/chat/completions").unwrap().name, "openai");
    }

    #[test]
    fn strip_prefix_and_base_path() {
        let r = router(TWO);
        let a = r.find("/anthropic/v1/messages").unwrap();
        assert_eq!(
            a.upstream_uri("/anthropic/v1/messages", Some("beta=true"))
                .unwrap()
                .to_string(),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        assert_eq!(a.upstream_path("/anthropic"), "/");
        let o = r.find("/v1/models").unwrap();
        assert_eq!(
            o.upstream_uri("/v1/models", None).unwrap().to_string(),
            "http://127.0.0.1:9/base/v1/models"
        );
    }

    #[test]
    fn no_catch_all_means_no_match() {
        let r = router("routes:\n  - name: a\n    path_prefix: /a\n    upstream: http://x\n");
        assert!(r.find("/b").is_none());
    }

    #[test]
    fn the_upstream_port_is_the_urls_else_the_schemes() {
        let r = router(TWO);
        assert_eq!(r.find("/anthropic").unwrap().port(), 443);
        assert_eq!(r.find("/v1").unwrap().port(), 9);
        let plain = router("routes:\n  - name: a\n    path_prefix: /\n    upstream: http://x\n");
        assert_eq!(plain.find("/").unwrap().port(), 80);
    }
}
