//! [`ConfigError`]: why a configuration could not be used.

use std::path::PathBuf;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// YAML syntax, an unknown key or a wrongly typed value; the message carries line and column.
    #[error("{origin}: {message}")]
    Parse {
        /// File name, or `<inline>`.
        origin: String,
        /// serde-saphyr's message, with line, column and a snippet.
        message: String,
    },
    /// The file parsed but a value is unusable.
    #[error("{origin}: {key}{at}: {message}", at = At(*line))]
    Invalid {
        /// File name, or `<inline>`.
        origin: String,
        /// Dotted path of the offending key, e.g. `routes[1].upstream`.
        key: String,
        /// What is wrong with it.
        message: String,
        /// The key's line in the file, when it is written there (not a default).
        line: Option<usize>,
    },
}

/// ` (line N)`, or nothing when the line is unknown.
struct At(Option<usize>);

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, " (line {n})"),
            None => Ok(()),
        }
    }
}

// === impl ConfigError ===

impl ConfigError {
    /// The error, naming `origin` (the file) as where the value came from.
    pub(super) fn with_origin(self, origin: &str) -> Self {
        match self {
            ConfigError::Invalid {
                key, message, line, ..
            } => ConfigError::Invalid {
                origin: origin.to_string(),
                key,
                message,
                line,
            },
            other => other,
        }
    }

    /// The error, naming the line of its key in `text` (the file it came from).
    pub(super) fn with_line(self, text: &str) -> Self {
        match self {
            ConfigError::Invalid {
                origin,
                key,
                message,
                line: None,
            } => ConfigError::Invalid {
                line: super::lines::line_of(text, &key),
                origin,
                key,
                message,
            },
            other => other,
        }
    }
}
