//! The configuration file: typed, strict, and runnable with no file at all.
//!
//! Every struct denies unknown keys so a typo is an error with its line, never a silently ignored
//! setting. Defaults live in named functions so `tokenwarden` with no config runs as CONTRACT.md
//! promises: proxy on 127.0.0.1:8080 forwarding to api.openai.com, admin on 127.0.0.1:9464.

mod error;
mod lines;
mod load;
mod schema;
mod validate;

pub use error::ConfigError;
pub use load::{load, load_from_str};
pub use schema::*;
pub use validate::{advisories, forbidden_input_set, forbidden_input_sources, parse_window};
