//! States a call passes through that end up as label or attribute values: typed here, turned
//! into their fixed strings only where they are written out.

/// What budgets decided for a call (`tokenwarden.budget.decision`,
/// `tokenwarden_budget_decisions_total{decision}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BudgetDecision {
    /// Within every limit.
    Allowed,
    /// Within every limit, one past its `warn_at`.
    Warned,
    /// Refused before it went upstream.
    Rejected,
    /// Its stream was ended at the limit.
    Cut,
    /// Over an `observe` limit: recorded, not enforced.
    Observed,
}

/// A policy a call broke (`tokenwarden_policy_violations_total{policy}`, the error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyViolation {
    /// A tool on the agent's deny list (declared or called).
    DeniedTool,
    /// A tool call naming a tool the request did not declare.
    UndeclaredTool,
    /// Tool-call arguments that break the tool's JSON Schema.
    InvalidToolArgs,
    /// A tool call that needs a human's approval.
    ApprovalRequired,
    /// The session's step limit.
    MaxSteps,
    /// The same request repeated within the loop window.
    Loop,
    /// Request content matching a forbidden input pattern.
    ForbiddenInput,
    /// `max_tokens` over the agent's cap.
    MaxTokens,
    /// Input over the model's context window.
    ContextWindow,
}

/// How the upstream failed (`tokenwarden_upstream_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// TCP or TLS connect failed or timed out (the request never reached the upstream).
    Connect,
    /// First byte or idle timeout.
    Timeout,
    /// Connection reset or broken framing.
    Reset,
    /// The upstream answered 5xx.
    Status5xx,
    /// The upstream answered 429.
    Status429,
}

// === impl BudgetDecision ===

impl BudgetDecision {
    /// Every decision, in label order.
    pub const ALL: [BudgetDecision; 5] = [
        BudgetDecision::Allowed,
        BudgetDecision::Warned,
        BudgetDecision::Rejected,
        BudgetDecision::Cut,
        BudgetDecision::Observed,
    ];

    /// Label and attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetDecision::Allowed => "allowed",
            BudgetDecision::Warned => "warned",
            BudgetDecision::Rejected => "rejected",
            BudgetDecision::Cut => "cut",
            BudgetDecision::Observed => "observed",
        }
    }
}

// === impl PolicyViolation ===

impl PolicyViolation {
    /// Every policy, in label order.
    pub const ALL: [PolicyViolation; 9] = [
        PolicyViolation::DeniedTool,
        PolicyViolation::UndeclaredTool,
        PolicyViolation::InvalidToolArgs,
        PolicyViolation::ApprovalRequired,
        PolicyViolation::MaxSteps,
        PolicyViolation::Loop,
        PolicyViolation::ForbiddenInput,
        PolicyViolation::MaxTokens,
        PolicyViolation::ContextWindow,
    ];

    /// Label value and error code.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyViolation::DeniedTool => "denied_tool",
            PolicyViolation::UndeclaredTool => "undeclared_tool",
            PolicyViolation::InvalidToolArgs => "invalid_tool_args",
            PolicyViolation::ApprovalRequired => "approval_required",
            PolicyViolation::MaxSteps => "max_steps",
            PolicyViolation::Loop => "loop",
            PolicyViolation::ForbiddenInput => "forbidden_input",
            PolicyViolation::MaxTokens => "max_tokens",
            PolicyViolation::ContextWindow => "context_window",
        }
    }
}

// === impl UpstreamError ===

impl UpstreamError {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Reset => "reset",
            UpstreamError::Status5xx => "status_5xx",
            UpstreamError::Status429 => "status_429",
        }
    }
}

impl std::fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
