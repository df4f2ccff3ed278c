//! Response bodies: the observing pass-through wrapper every response streams through.

mod observed;
mod strip_usage;

pub use observed::{BodyEnd, IdleTimeout, ObservedBody, Observer};
pub use strip_usage::StripUsage;
