//! Reading a config file (or no file) into a validated [`Config`].

use std::path::Path;

use super::error::ConfigError;
use super::schema::Config;

/// Load the config at `path`, or the built-in defaults when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let Some(path) = path else {
        let config = Config::default();
        super::validate::validate(&config).map_err(|e| e.with_origin("<defaults>"))?;
        return Ok(config);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_from_str(&text, &path.display().to_string())
}

/// Parse and validate config text; `origin` names it in errors.
pub fn load_from_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    // An empty file (or one holding only comments) means "all defaults".
    let config: Config = if text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---"
    }) {
        Config::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            // No snippet: it quotes the offending line and the two before it, which may hold
            // an API key or a password; the position and the key name are enough to find it.
            message: with_key(
                redact_values(&e.without_snippet().to_string()),
                e.location().and_then(|l| key_at(text, l.line())),
            ),
        })?
    };
    super::validate::validate(&config).map_err(|e| e.with_origin(origin).with_line(text))?;
    Ok(config)
}

/// `message`, naming `key` when it does not already (a value error names only its position).
fn with_key(message: String, key: Option<&str>) -> String {
    match key {
        Some(k) if !message.contains(&format!("`{k}`")) => format!("{message} (key `{k}`)"),
        _ => message,
    }
}

/// The mapping key written on line `line` (1-based) of `text`, if that line is `key: …`: a key
/// is never a secret, and it tells the reader what to fix when the value cannot be shown.
fn key_at(text: &str, line: u64) -> Option<&str> {
    let l = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let l = l.trim_start().trim_start_matches("- ");
    let (key, _) = l.split_once(':')?;
    let key = key.trim().trim_matches('"');
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*'));
    plain.then_some(key)
}

/// `message` with every value it quotes replaced by `<redacted>`: serde quotes strings
/// (`string "…"`) and enum values (`unknown variant `…``), and either may be a secret. Key names
/// (`unknown field `…``, `missing field `…``) are kept: they say what to fix.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(['"', '`']) {
        let (before, from) = rest.split_at(i);
        out.push_str(before);
        let quote = from.as_bytes()[0] as char;
        let body = &from[1..];
        // Serde writes strings with Debug escapes: `\"` does not end one.
        let mut end = None;
        let mut escaped = false;
        for (j, c) in body.char_indices() {
            match c {
                '\\' if quote == '"' && !escaped => escaped = true,
                c if c == quote && !escaped => {
                    end = Some(j);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else {
            out.push_str("<redacted>");
            return out;
        };
        if quote == '`' && before.ends_with("field ") {
            out.push_str(&from[..end + 2]);
        } else {
            out.push(quote);
            out.push_str("<redacted>");
            out.push(quote);
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_the_defaults() {
        let c = load_from_str("# nothing here\n", "t").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].upstream, "https://api.openai.com");
        assert_eq!(c.server.max_request_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = "listen: 127.0.0.1:8080\nroutes:\n  - name: a\n    path_prefix: /\n    upstream: http://127.0.0.1:1\n    strip_prefx: true\n";
        let err = load_from_str(text, "bad.yaml").unwrap_err().to_string();
        assert!(err.contains("strip_prefx"), "{err}");
        assert!(err.contains("line 6"), "{err}");
        assert!(err.starts_with("bad.yaml"), "{err}");
    }

    #[test]
    fn errors_name_key_and_position_never_the_value() {
        let cases = [
            // An unknown key: its line and the two before would hold the secret.
            "routes:\n  - name: a\n    api_key: sk-secret-123\n    path_prefix: /\n    upstream: http://x\n",
            "budgets:\n  store:\n    kind: \"sk-secret-123\"\n",
            "server:\n  shutdown_grace: \"sk-secret-123\"\n",
            "server:\n  shutdown_grace: \"sk-\\\"secret-123\"\n",
        ];
        for text in cases {
            let err = load_from_str(text, "c.yaml").unwrap_err().to_string();
            assert!(!err.contains("secret-123"), "{err}");
            assert!(err.contains("line "), "{err}");
        }
        let err = load_from_str(cases[0], "c.yaml").unwrap_err().to_string();
        assert!(err.contains("unknown field `api_key`"), "{err}");
        assert_eq!(
            redact_values("invalid value: string \"a\\\"b\", expected x; unknown variant `v`"),
            "invalid value: string \"<redacted>\", expected x; unknown variant `<redacted>`"
        );
    }

    #[test]
    fn unknown_top_level_key_is_refused() {
        let err = load_from_str("listen: 127.0.0.1:1\nlisten_port: 3\n", "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen_port") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn durations_parse_in_human_form() {
        let c = load_from_str(
            "upstream:\n  connect_timeout: 250ms\n  idle_timeout: 2m\nserver:\n  header_read_timeout: 3s\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.upstream.connect_timeout.as_millis(), 250);
        assert_eq!(c.upstream.idle_timeout.as_secs(), 120);
        assert_eq!(c.server.header_read_timeout.as_secs(), 3);
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tokenwarden.yaml");
        let c = load(Some(&path)).unwrap();
        assert!(c.routes.iter().any(|r| r.name == "anthropic"));
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let err = load(Some(Path::new("/nonexistent/tw.yaml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tw.yaml"));
    }
}
