//! Response bodies: the observing pass-through wrapper every response streams through.

mod observed;

pub use observed::{BodyEnd, IdleTimeout, ObservedBody, Observer};
