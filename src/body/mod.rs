//! Response bodies: the observing pass-through wrapper every response streams through, and the
//! stream rewriters that may wrap it (a budget's cut, hidden injected usage).

pub mod cut;
mod observed;
mod strip_usage;

pub use cut::{Cut, CutPoint, CutSignal};
pub use observed::{BodyEnd, IdleTimeout, ObservedBody, Observer};
pub use strip_usage::StripUsage;
