//! The approvals page on the admin port: `GET /approvals` (HTML), `/approvals.js`,
//! `/approvals.css`. No external assets; the script reads and decides through the admin API with
//! the token the person enters (kept in sessionStorage, sent as a bearer token). The content
//! security policy lets the page load only its own script and style and talk only to its origin.

/// The page.
pub const HTML: &str = include_str!("page.html");
/// Its script.
pub const JS: &str = include_str!("page.js");
/// Its style.
pub const CSS: &str = include_str!("page.css");

/// The page's content security policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The asset at `path` and its content type, when `path` is one of the page's.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/approvals" | "/approvals/" => Some((HTML, "text/html; charset=utf-8")),
        "/approvals.js" => Some((JS, "text/javascript; charset=utf-8")),
        "/approvals.css" => Some((CSS, "text/css; charset=utf-8")),
        _ => None,
    }
}
