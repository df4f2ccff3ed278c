//! What budgets refuse a call with; the proxy answers it in the provider's error shape.

use http::StatusCode;

use super::limits::Amount;

/// Why budgets refused a call (it never went upstream).
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// A limit has too little left for the call.
    #[error("{0}")]
    Exceeded(Box<BudgetRefusal>),
    /// The store is unreachable and `on_store_unreachable` is `fail_closed`.
    #[error("tokenwarden: the budget store is unreachable")]
    StoreUnavailable,
}

/// A budget refusal: what does not fit is this call's need (its estimated input) in what the
/// limit has left. Boxed in [`BudgetError`]: refusals are rare, the `Ok` paths stay small.
#[derive(Debug, thiserror::Error)]
#[error(
    "tokenwarden: {scope} {unit} budget exceeded: this call needs ~{need}{} but only {remaining} of {limit}{} remain (window: {window})",
    need.unit_suffix(),
    limit.unit_suffix()
)]
pub struct BudgetRefusal {
    /// session | task | agent | global.
    pub scope: &'static str,
    /// token | usd.
    pub unit: &'static str,
    /// `{scope}_{unit}_budget_exceeded`.
    pub code: &'static str,
    /// `lifetime` or the window as configured.
    pub window: std::sync::Arc<str>,
    /// The limit.
    pub limit: Amount,
    /// What the limit has left (not spent, not reserved by calls in flight).
    pub remaining: Amount,
    /// What this call needs to be admitted: its estimated input (priced, for USD).
    pub need: Amount,
    /// Seconds until the window resets; `None` for lifetime limits (retrying is futile).
    pub retry_after: Option<u64>,
    /// Status of a lifetime refusal (`budgets.lifetime_refusal`); windowed ones are 429.
    pub lifetime_status: StatusCode,
}
