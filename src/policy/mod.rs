//! Agent policies at the proxy: per-agent rules built from `agents:` and `models:` in config,
//! checked on each request before it goes upstream and on each response's tool calls.
//!
//! Request side ([`Policies::admit`], in order): `max_steps`, declared tools against the
//! allow/deny lists (refuse or strip), forbidden input patterns, the `max_tokens` cap, loop
//! detection, tool results the agent reports (metrics only), the context-window guard. A refusal
//! is a [`PolicyError`] answered before anything reaches the upstream.
//!
//! Checking has no side effects: what an admitted request changes — its session step, the loop
//! history, tool-result and violation counts — is kept in a [`Pending`] and applied by
//! [`Policies::commit`] once budgets admitted the call too. A refused call, and every retry of it
//! a client makes, leaves the session as it was.
//!
//! MCP tool calls (`mcp.rs`): each executed `tools/call` against the lists, `max_steps`, loop
//! detection and the `inputSchema` its server declared; `tools/list` results filtered.
//!
//! Response side ([`ResponseCheck::review`]): every tool call the model emitted against the
//! lists, the request's declared tools and their JSON Schemas, and `require_approval`.
//!
//! The rule set sits behind an [`ArcSwap`]: a config reload swaps it without locks, and a request
//! keeps the rules it started with. Loop state lives outside it, so a reload keeps it.

mod context;
mod input;
mod loops;
mod mcp;
mod tools;
mod validate;

pub use context::ModelCatalog;
pub use input::ForbiddenInput;
pub use loops::{request_hash, LoopTracker};
pub use mcp::ToolSchemas;
pub use tools::ToolRules;
pub use validate::{check_calls, Finding};

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use metrics::{counter, Counter, Histogram, Key, Label};
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{
    AgentPolicy, ApprovalAction, CapAction, Config, DeclaredToolAction, Enforcement, LoopDetection,
    MaxTokensCap,
};
use crate::providers::doc::DocError;
use crate::providers::request::{DeclaredTool, RequestFacts};
use crate::providers::{Capped, Doc, Node, ToolCall, ToolResult};
use crate::record::{CallLabels, Operation, PolicyViolation};
use crate::telemetry::handles::Handles;
use crate::telemetry::labels::Labels;
use crate::telemetry::metrics as m;

/// What a policy refuses a call with; the proxy answers it in the provider's error shape.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy refused the request or withheld the response.
    #[error("tokenwarden: policy {policy}: {message}")]
    Refused {
        /// The policy.
        policy: PolicyViolation,
        /// What was refused, naming the tool or limit (never request content).
        message: String,
    },
    /// Request content matched a forbidden input pattern.
    #[error(
        "tokenwarden: policy forbidden_input: the request matches forbidden input pattern '{id}'"
    )]
    ForbiddenInput {
        /// The pattern's configured id.
        id: String,
    },
}

// === impl PolicyError ===

impl PolicyError {
    /// The policy that refused.
    pub fn policy(&self) -> PolicyViolation {
        match self {
            PolicyError::Refused { policy, .. } => *policy,
            PolicyError::ForbiddenInput { .. } => PolicyViolation::ForbiddenInput,
        }
    }
}

/// The agent key whose rules apply to agents without their own entry.
pub const ANY_AGENT: &str = "*";

/// One agent's rules, compiled.
#[derive(Debug)]
pub struct AgentRules {
    tools: ToolRules,
    max_steps: Option<u64>,
    denied_tool_action: DeclaredToolAction,
    tool_call_action: Enforcement,
    approval_action: ApprovalAction,
    context_window_action: Enforcement,
    loop_detection: LoopDetection,
    forbidden: ForbiddenInput,
    max_tokens_cap: Option<MaxTokensCap>,
    tool_error_markers: Vec<String>,
}

/// Every agent's rules and the model catalog: what one config reload swaps in.
#[derive(Debug)]
pub struct PolicySet {
    /// Looked up twice a call by an agent name a header may carry: foldhash, seeded at random.
    agents: HashMap<String, Arc<AgentRules>, foldhash::fast::RandomState>,
    fallback: Arc<AgentRules>,
    catalog: ModelCatalog,
    longest_loop_window: Duration,
}

/// The live policy set, loop state and label caps, shared by every request.
pub struct Policies {
    set: ArcSwap<PolicySet>,
    loops: LoopTracker,
    /// Tool schemas MCP servers declared, per MCP session (outside the set: a reload keeps them).
    schemas: ToolSchemas,
    labels: Arc<Labels>,
}

/// Who is asking, for [`Policies::evaluate`].
pub struct Asker<'a> {
    /// Agent label.
    pub agent: &'a Arc<str>,
    /// Operation label (`chat`, `embeddings`, ...).
    pub operation: Operation,
    /// Session id, when the request named one.
    pub session: Option<&'a Arc<str>>,
    /// Step number in the session.
    pub step: Option<u64>,
    /// When the request arrived.
    pub now: Instant,
}

/// A request the policies let through.
pub struct Admission {
    /// The body to forward instead, when a policy rewrote it (stripped tools, clamped cap).
    pub rewritten: Option<Bytes>,
    /// The check to run on the response's tool calls.
    pub check: ResponseCheck,
    /// What the request changes once it is admitted (see [`Policies::commit`]).
    pub pending: Pending,
}

/// The side effects of a request the policies let through, applied only when the call is
/// admitted by every check ([`Policies::commit`]); dropped unapplied when budgets refuse it.
#[derive(Debug)]
pub struct Pending {
    agent: Arc<str>,
    now: Instant,
    /// Policies the request broke without being refused: counted at commit.
    violations: Vec<PolicyViolation>,
    max_steps: Option<u64>,
    /// Request hash and the agent's loop window.
    loop_hash: Option<(u64, Duration)>,
    longest_loop_window: Duration,
    tool_results: Vec<ToolResult>,
    /// Model label and estimated input / context window.
    context: Option<(Arc<str>, f64)>,
    /// An MCP call of a `require_approval` tool under `approval_action: hold`.
    hold: bool,
    /// The tokenizer's input estimate of the body as forwarded, when the context guard needed
    /// it: budgets take it instead of reading the body again.
    input_tokens: Option<u64>,
}

/// A request the policies refuse.
pub struct Refusal {
    /// Policies the request broke (for the span).
    pub violations: Vec<PolicyViolation>,
    /// The answer (boxed: refusals are rare, the `Ok` path stays small).
    pub error: Box<PolicyError>,
}

/// The response-side check of one call: its agent's rules as they were when it started.
#[derive(Clone)]
pub struct ResponseCheck {
    rules: Arc<AgentRules>,
    agent: Arc<str>,
}

/// What [`ResponseCheck::review`] found.
#[derive(Debug, Default)]
pub struct Review {
    /// Distinct policies broken (for the span).
    pub violations: Vec<PolicyViolation>,
    /// The refusal replacing the response, when a broken policy is set to block.
    pub block: Option<PolicyError>,
}

fn count(agent: &Arc<str>, policy: PolicyViolation) {
    // Counted on every call an agent's rules flag (a `max_tokens` cap added, say).
    static COUNTERS: LazyLock<Handles<(Arc<str>, PolicyViolation), Counter>> =
        LazyLock::new(Handles::default);
    COUNTERS
        .counter(&(agent.clone(), policy), || {
            Key::from_parts(
                m::POLICY_VIOLATIONS_TOTAL,
                vec![
                    Label::new("agent", agent.clone()),
                    Label::new("policy", policy.as_str()),
                ],
            )
        })
        .increment(1);
}

/// `tokenwarden_context_utilization_ratio{model}`: one sample per call with a known window.
fn context_sample(model: Arc<str>, ratio: f64) {
    static HISTOGRAMS: LazyLock<Handles<Arc<str>, Histogram>> = LazyLock::new(Handles::default);
    HISTOGRAMS
        .histogram(&model, || {
            Key::from_parts(
                m::CONTEXT_UTILIZATION_RATIO,
                vec![Label::new("model", model.clone())],
            )
        })
        .record(ratio);
}

/// A refusal by `policy`: the violations noted so far and the refusing one are counted now (a
/// refused request has no commit).
fn refuse(
    violations: &mut Vec<PolicyViolation>,
    agent: &Arc<str>,
    policy: PolicyViolation,
    message: String,
) -> Refusal {
    refused(
        violations,
        agent,
        PolicyError::Refused { policy, message },
        policy,
    )
}

fn refused(
    violations: &mut Vec<PolicyViolation>,
    agent: &Arc<str>,
    error: PolicyError,
    policy: PolicyViolation,
) -> Refusal {
    flag(violations, policy);
    violations.iter().for_each(|v| count(agent, *v));
    Refusal {
        violations: std::mem::take(violations),
        error: Box::new(error),
    }
}

/// Note a violation on the request side, counted when the call is committed or refused.
fn flag(violations: &mut Vec<PolicyViolation>, policy: PolicyViolation) {
    if !violations.contains(&policy) {
        violations.push(policy);
    }
}

fn note(violations: &mut Vec<PolicyViolation>, agent: &Arc<str>, policy: PolicyViolation) {
    count(agent, policy);
    if !violations.contains(&policy) {
        violations.push(policy);
    }
}

// === impl AgentRules ===

impl AgentRules {
    /// The rules of an agent with no config: loop detection, validation and the context guard
    /// as flags, nothing refused.
    fn defaults() -> Self {
        let p = AgentPolicy::default();
        Self {
            tools: ToolRules::default(),
            max_steps: None,
            denied_tool_action: p.denied_tool_action,
            tool_call_action: p.tool_call_action,
            approval_action: p.approval_action,
            context_window_action: p.context_window_action,
            loop_detection: p.loop_detection,
            forbidden: ForbiddenInput::default(),
            max_tokens_cap: None,
            tool_error_markers: Vec::new(),
        }
    }

    fn new(p: &AgentPolicy) -> Result<Self, (String, String)> {
        let forbidden = ForbiddenInput::new(&p.forbidden_input)
            .map_err(|(i, msg)| (format!("forbidden_input[{i}]"), msg))?;
        Ok(Self {
            tools: ToolRules::new(p),
            max_steps: p.max_steps,
            denied_tool_action: p.denied_tool_action,
            tool_call_action: p.tool_call_action,
            approval_action: p.approval_action,
            context_window_action: p.context_window_action,
            loop_detection: p.loop_detection,
            forbidden,
            max_tokens_cap: p.max_tokens_cap,
            tool_error_markers: p.tool_error_markers.clone(),
        })
    }
}

// === impl PolicySet ===

impl PolicySet {
    /// Compile `agents:` and `models:`; the error is `(dotted key, message)`.
    pub fn from_config(config: &Config) -> Result<Self, (String, String)> {
        let mut agents = HashMap::default();
        for (name, p) in &config.agents {
            let rules =
                AgentRules::new(p).map_err(|(k, msg)| (format!("agents.{name}.{k}"), msg))?;
            agents.insert(name.clone(), Arc::new(rules));
        }
        let fallback = agents
            .remove(ANY_AGENT)
            .unwrap_or_else(|| Arc::new(AgentRules::defaults()));
        let longest_loop_window = agents
            .values()
            .chain(std::iter::once(&fallback))
            .map(|r| r.loop_detection.window)
            .max()
            .unwrap_or_default();
        Ok(Self {
            agents,
            fallback,
            catalog: ModelCatalog::new(&config.models),
            longest_loop_window,
        })
    }

    /// No agent entries, built-in model catalog, default rules for everyone.
    pub fn empty() -> Self {
        Self {
            agents: HashMap::default(),
            fallback: Arc::new(AgentRules::defaults()),
            catalog: ModelCatalog::new(&Default::default()),
            longest_loop_window: LoopDetection::default().window,
        }
    }

    /// The rules of `agent` (its own entry, else `"*"`, else the defaults).
    pub fn rules_for(&self, agent: &str) -> &Arc<AgentRules> {
        self.agents.get(agent).unwrap_or(&self.fallback)
    }

    /// Rules are looked up by the agent label, which is capped: configured agents are pinned,
    /// so traffic inventing agent names cannot push them to `other`. (A configured name over
    /// the label length limit cannot be matched; config validation refuses it.)
    fn admit_agent_labels(&self, labels: &Labels) {
        for name in self.agents.keys() {
            labels.agents.pin(name);
        }
    }

    /// The model catalog.
    pub fn catalog(&self) -> &ModelCatalog {
        &self.catalog
    }
}

// === impl Policies ===

impl Policies {
    /// Serve `set`; tool and model labels are capped by `labels`.
    pub fn new(set: PolicySet, labels: Arc<Labels>) -> Self {
        set.admit_agent_labels(&labels);
        Self {
            set: ArcSwap::from_pointee(set),
            loops: LoopTracker::default(),
            schemas: ToolSchemas::default(),
            labels,
        }
    }

    /// Swap in a new rule set; requests in flight keep the one they started with.
    pub fn replace(&self, set: PolicySet) {
        set.admit_agent_labels(&self.labels);
        self.set.store(Arc::new(set));
    }

    /// The rule set now serving.
    pub fn current(&self) -> Arc<PolicySet> {
        self.set.load_full()
    }

    /// Run the request-side policies for a call with `labels` in `session` (at the step it
    /// would take, [`crate::session::Sessions::next_step`]): rewrite `body` when a policy changed
    /// it, and return the response check and the side effects to commit once the call is
    /// admitted — or the refusal. Either way the policies broken so far come back for the span.
    /// `doc` is `body` already read (when it is a JSON object the proxy read): it is not parsed
    /// again.
    pub fn admit(
        &self,
        labels: &CallLabels,
        session: Option<&Arc<str>>,
        step: Option<u64>,
        facts: &mut RequestFacts,
        body: &mut Bytes,
        doc: Option<Doc>,
    ) -> Result<(ResponseCheck, Pending), Refusal> {
        let asker = Asker {
            agent: &labels.agent,
            operation: labels.operation,
            session,
            step,
            now: Instant::now(),
        };
        let a = self.evaluate_parsed(&asker, facts, body, doc)?;
        if let Some(b) = a.rewritten {
            *body = b;
        }
        Ok((a.check, a.pending))
    }

    /// Whether loop detection watches `agent`'s sessions: then the proxy hashes the request's
    /// conversation as it parses it (a session's calls need the hash; one walk less).
    pub fn hashes_requests(&self, agent: &str) -> bool {
        self.set.load().rules_for(agent).loop_detection.enabled
    }

    /// The request-side policies for one asker (benchmarks and tests use it directly).
    pub fn evaluate(
        &self,
        asker: &Asker<'_>,
        facts: &mut RequestFacts,
        body: &[u8],
    ) -> Result<Admission, Refusal> {
        self.evaluate_parsed(asker, facts, body, None)
    }

    /// [`Policies::evaluate`] with the body's document when the caller read it already.
    pub fn evaluate_doc(
        &self,
        asker: &Asker<'_>,
        facts: &mut RequestFacts,
        body: &[u8],
        doc: Doc,
    ) -> Result<Admission, Refusal> {
        self.evaluate_parsed(asker, facts, body, Some(doc))
    }

    fn evaluate_parsed(
        &self,
        asker: &Asker<'_>,
        facts: &mut RequestFacts,
        body: &[u8],
        parsed: Option<Doc>,
    ) -> Result<Admission, Refusal> {
        let set = self.set.load();
        let rules = set.rules_for(asker.agent).clone();
        let agent = asker.agent;
        let mut violations = Vec::new();
        let check = ResponseCheck {
            rules: rules.clone(),
            agent: agent.clone(),
        };
        let mut pending = Pending::new(asker, &rules, &set);

        if let (Some(max), Some(step)) = (rules.max_steps, asker.step) {
            if step > max {
                let msg = steps_message(max, agent);
                return Err(refuse(
                    &mut violations,
                    agent,
                    PolicyViolation::MaxSteps,
                    msg,
                ));
            }
        }
        if asker.operation == Operation::Embeddings {
            return Ok(Admission {
                rewritten: None,
                check,
                pending,
            });
        }

        // The policies read the document; a rewrite (stripped tools, a clamped cap) builds the
        // owned `Value` once, and the document is read again from the rewritten bytes.
        let mut doc = match parsed {
            Some(d) => Some(d),
            None if crate::providers::request::is_object(body) => {
                Doc::parse(Bytes::copy_from_slice(body)).ok()
            }
            None => None,
        };
        let mut dirty = false;
        // The body with an added cap, when it was added as text (the last rewrite there is).
        let mut capped_text: Option<Bytes> = None;
        // Tools stripped: the text differs from the body's (a clamped cap changes no text).
        let mut stripped = false;
        let adapter = facts.format.adapter();

        if rules.tools.restricts() {
            if let Some(bad) = facts.tools.iter().find(|t| !rules.tools.permits(&t.name)) {
                let tool = bad.name.clone();
                let keep = |n: &str| rules.tools.permits(n);
                // A format whose bodies are signed (Bedrock) is never rewritten: there a denied
                // tool refuses the call even under `strip`.
                let strip = matches!(rules.denied_tool_action, DeclaredToolAction::Strip)
                    && doc
                        .as_mut()
                        .is_none_or(|d| rewrite(d, |v| adapter.strip_tools(v, &keep)));
                if !strip {
                    let msg = format!("agent '{agent}' may not use tool '{tool}'");
                    return Err(refuse(
                        &mut violations,
                        agent,
                        PolicyViolation::DeniedTool,
                        msg,
                    ));
                }
                flag(&mut violations, PolicyViolation::DeniedTool);
                dirty |= doc.is_some();
                stripped |= doc.is_some();
                facts.tools.retain(|t| keep(&t.name));
            }
        }

        if let Some(d) = doc.as_ref() {
            if let Some(id) = rules.forbidden.find(d.root()) {
                let e = PolicyError::ForbiddenInput { id: id.to_string() };
                return Err(refused(
                    &mut violations,
                    agent,
                    e,
                    PolicyViolation::ForbiddenInput,
                ));
            }
        }

        // The loop hash is of the request as it goes upstream (denied tools stripped), read
        // before the cap: a cap adds no field the hash reads, and the document as parsed still
        // has the hashes its parse kept (a rewritten one is walked).
        let ld = rules.loop_detection;
        let loop_hash = match (ld.enabled, asker.session, doc.as_ref()) {
            (true, Some(_), Some(d)) => Some(request_hash(d.root())),
            _ => None,
        };

        if let Some(cap) = rules.max_tokens_cap {
            let over = facts.max_tokens.filter(|n| *n > cap.limit);
            if let (Some(n), CapAction::Reject) = (over, cap.action) {
                let msg = format!(
                    "the request asks for {n} output tokens; the cap is {}",
                    cap.limit
                );
                return Err(refuse(
                    &mut violations,
                    agent,
                    PolicyViolation::MaxTokens,
                    msg,
                ));
            }
            // Flagged even where the body is never rewritten (Bedrock's, signed): over the cap.
            if over.is_some() {
                flag(&mut violations, PolicyViolation::MaxTokens);
            }
            // At or under the cap the body stays as sent: no `Value` is built.
            let within = facts.max_tokens.is_some_and(|n| n <= cap.limit);
            if let Some(d) = doc.as_mut().filter(|_| !within) {
                let requested = facts.max_tokens;
                // Nothing set: the field is added to the body's own text where the format
                // allows, without building and writing out a `Value` of the conversation.
                // The document stays the one read: what the policies below read of it (tool
                // results, the context guard's text) the added number does not change, and the
                // body is not parsed a second time.
                let added = requested
                    .is_none()
                    .then(|| adapter.cap_added_text(d, cap.limit))
                    .flatten();
                let capped = match added {
                    Some(text) => {
                        capped_text = Some(Bytes::from(text));
                        true
                    }
                    None => rewrite(d, |v| {
                        adapter.clamp_max_tokens(v, requested, cap.limit) != Capped::Within
                    }),
                };
                if capped {
                    facts.max_tokens = Some(cap.limit);
                    dirty = true;
                }
            }
        }

        if let (Some(hash), Some(session)) = (loop_hash, asker.session) {
            // Recorded at commit: a refused call must not count as a repeat.
            let n = self.loops.peek(session, hash, asker.now, ld.window);
            pending.loop_hash = Some((hash, ld.window));
            if n >= ld.threshold {
                if ld.action == Enforcement::Block {
                    let msg = format!(
                        "the same request was sent {n} times in this session within {}",
                        humantime_window(ld.window)
                    );
                    return Err(refuse(&mut violations, agent, PolicyViolation::Loop, msg));
                }
                flag(&mut violations, PolicyViolation::Loop);
            }
        }

        if let Some(d) = doc.as_ref() {
            pending.tool_results = adapter.tool_results(d.root(), &rules.tool_error_markers);
        }

        if let Some(model) = facts.model.as_deref() {
            if let Some(window) = set.catalog.window(model) {
                let output = facts.max_tokens.unwrap_or(0);
                // The parsed body serves the tokenizer unless a policy changed its text
                // (stripped tools): the guard counts the body as the agent sent it.
                let parsed = doc.as_ref().filter(|_| !stripped).map(Doc::root);
                let (input, exact) = context_estimate(facts.format, body, parsed, output, window);
                // Shared with budgets when it counts the text that goes upstream.
                pending.input_tokens = exact.filter(|_| !stripped);
                let sample = (self.labels.models.get(model), input as f64 / window as f64);
                if input.saturating_add(output) > window {
                    if rules.context_window_action == Enforcement::Block {
                        // The measurement is what this refusal is about: recorded with it.
                        context_sample(sample.0, sample.1);
                        let msg = format!(
                            "about {input} input tokens plus {output} output tokens do not fit the {window}-token context window of '{model}'"
                        );
                        return Err(refuse(
                            &mut violations,
                            agent,
                            PolicyViolation::ContextWindow,
                            msg,
                        ));
                    }
                    flag(&mut violations, PolicyViolation::ContextWindow);
                }
                pending.context = Some(sample);
            }
        }

        let rewritten = match (capped_text, dirty, doc) {
            (Some(text), _, _) => Some(text),
            (None, true, Some(d)) => Some(d.bytes().clone()),
            _ => None,
        };
        pending.violations = violations;
        Ok(Admission {
            rewritten,
            check,
            pending,
        })
    }

    /// Apply what an admitted call changes: its loop history entry, tool-result and violation
    /// counts, the context-utilization sample. Called once, after every check let it through.
    pub fn commit(&self, p: Pending, session: Option<&Arc<str>>) {
        p.violations.iter().for_each(|v| count(&p.agent, *v));
        if let (Some((hash, window)), Some(s)) = (p.loop_hash, session) {
            self.loops
                .record(s, hash, p.now, window, p.longest_loop_window);
        }
        for r in &p.tool_results {
            counter!(m::TOOL_RESULTS_TOTAL,
                "agent" => p.agent.clone(),
                "tool" => self.labels.tools.get(&r.tool),
                "outcome" => if r.failed { "error" } else { "ok" },
            )
            .increment(1);
        }
        if let Some((model, ratio)) = p.context {
            context_sample(model, ratio);
        }
    }

    /// The refusal of a call that passed the policies but lost its step to a concurrent call of
    /// the same session at `max_steps` (counted like any `max_steps` refusal).
    pub fn steps_used(&self, p: &Pending) -> PolicyError {
        let max = p.max_steps.unwrap_or(0);
        count(&p.agent, PolicyViolation::MaxSteps);
        PolicyError::Refused {
            policy: PolicyViolation::MaxSteps,
            message: steps_message(max, &p.agent),
        }
    }
}

/// Which tools an agent may see and call (its lists restrict).
#[derive(Clone)]
pub struct ToolFilter(Arc<AgentRules>);

// === impl ToolFilter ===

impl ToolFilter {
    /// Whether the agent may see and call `name`.
    pub fn permits(&self, name: &str) -> bool {
        self.0.tools.permits(name)
    }
}

// === impl Policies: MCP tool calls ===

impl Policies {
    /// The tool filter of `agent`, when its lists restrict what it may use.
    pub fn tool_filter(&self, agent: &str) -> Option<ToolFilter> {
        let set = self.set.load();
        let rules = set.rules_for(agent);
        rules.tools.restricts().then(|| ToolFilter(rules.clone()))
    }

    /// Declared tool schemas per MCP session.
    pub fn tool_schemas(&self) -> &ToolSchemas {
        &self.schemas
    }

    /// The policies on one `tools/call` the agent makes to tool server session `key`: refused
    /// (denied tool, `max_steps`, a blocking approval, invalid-argument or loop rule) or let
    /// through with its side effects pending (commit with [`Policies::commit`]).
    pub fn admit_tool_call(
        &self,
        asker: &Asker<'_>,
        key: &str,
        tool: &str,
        args: Option<&Value>,
    ) -> Result<Pending, Refusal> {
        let set = self.set.load();
        let rules = set.rules_for(asker.agent).clone();
        let agent = asker.agent;
        let mut violations = Vec::new();
        let mut pending = Pending::new(asker, &rules, &set);
        if let (Some(max), Some(step)) = (rules.max_steps, asker.step) {
            if step > max {
                let msg = steps_message(max, agent);
                return Err(refuse(
                    &mut violations,
                    agent,
                    PolicyViolation::MaxSteps,
                    msg,
                ));
            }
        }
        if !rules.tools.permits(tool) {
            let msg = format!(
                "agent '{agent}' may not use tool '{tool}'; tokenwarden did not forward the call"
            );
            return Err(refuse(
                &mut violations,
                agent,
                PolicyViolation::DeniedTool,
                msg,
            ));
        }
        if rules.tools.needs_approval(tool) {
            if rules.approval_action == ApprovalAction::Block {
                let msg = format!(
                    "tool '{tool}' requires human approval; tokenwarden did not forward the call"
                );
                return Err(refuse(
                    &mut violations,
                    agent,
                    PolicyViolation::ApprovalRequired,
                    msg,
                ));
            }
            flag(&mut violations, PolicyViolation::ApprovalRequired);
            pending.hold = rules.approval_action == ApprovalAction::Hold;
        }
        let not_object = args.is_some_and(|a| !a.is_object());
        let invalid = not_object
            || self
                .schemas
                .invalid(key, tool, args, asker.now)
                .unwrap_or(false);
        if invalid {
            if rules.tool_call_action == Enforcement::Block {
                let msg = format!("the arguments of this call to tool '{tool}' do not match the inputSchema the server declared; tokenwarden did not forward the call");
                return Err(refuse(
                    &mut violations,
                    agent,
                    PolicyViolation::InvalidToolArgs,
                    msg,
                ));
            }
            flag(&mut violations, PolicyViolation::InvalidToolArgs);
        }
        let ld = rules.loop_detection;
        if let (true, Some(session)) = (ld.enabled, asker.session) {
            let hash = loops::tool_call_hash(tool, args);
            let n = self.loops.peek(session, hash, asker.now, ld.window);
            pending.loop_hash = Some((hash, ld.window));
            if n >= ld.threshold {
                if ld.action == Enforcement::Block {
                    let msg = format!(
                        "the same call to tool '{tool}' was made {n} times in this session within {}",
                        humantime_window(ld.window)
                    );
                    return Err(refuse(&mut violations, agent, PolicyViolation::Loop, msg));
                }
                flag(&mut violations, PolicyViolation::Loop);
            }
        }
        pending.violations = violations;
        Ok(pending)
    }
}

fn steps_message(max: u64, agent: &str) -> String {
    format!("this session has used its {max} steps (agent '{agent}')")
}

// === impl Pending ===

impl Pending {
    /// Nothing to apply yet, for `asker` under `rules` of `set`.
    fn new(asker: &Asker<'_>, rules: &AgentRules, set: &PolicySet) -> Self {
        Self {
            agent: asker.agent.clone(),
            now: asker.now,
            violations: Vec::new(),
            max_steps: rules.max_steps,
            loop_hash: None,
            longest_loop_window: set.longest_loop_window,
            tool_results: Vec::new(),
            context: None,
            hold: false,
            input_tokens: None,
        }
    }

    /// Policies the request broke without being refused (for the span).
    pub fn violations(&self) -> &[PolicyViolation] {
        &self.violations
    }

    /// Tool results the request reported as failed (for the task's numbers).
    pub fn tool_result_failures(&self) -> u64 {
        self.tool_results.iter().filter(|r| r.failed).count() as u64
    }

    /// Whether the call waits for a person's approval (`approval_action: hold`).
    pub fn held(&self) -> bool {
        self.hold
    }

    /// The tokenizer's input estimate of the body as forwarded, when the context guard counted
    /// it (budgets reuse it).
    pub fn input_tokens(&self) -> Option<u64> {
        self.input_tokens
    }

    /// The agent's `max_steps`, for taking the session step at commit.
    pub fn max_steps(&self) -> Option<u64> {
        self.max_steps
    }
}

fn humantime_window(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

// === impl ResponseCheck ===

impl ResponseCheck {
    /// Whether a broken policy on the response side would replace it (so a JSON response must be
    /// held until its tool calls are checked).
    pub fn blocks(&self) -> bool {
        self.rules.tool_call_action == Enforcement::Block
            || self.rules.approval_action == ApprovalAction::Block
    }

    /// The refusal of a response (a gated stream's event, a held body) too large or malformed to
    /// read for tool calls: what it carries cannot be checked, so it is withheld as invalid
    /// arguments (counted).
    pub fn unreadable(&self) -> PolicyError {
        count(&self.agent, PolicyViolation::InvalidToolArgs);
        PolicyError::Refused {
            policy: PolicyViolation::InvalidToolArgs,
            message: "the response carries what tokenwarden could not read for tool calls (malformed, or over 8 MiB); tokenwarden withheld it".into(),
        }
    }

    /// Check the response's tool calls; counts every finding.
    pub fn review(&self, declared: &[DeclaredTool], calls: &[ToolCall]) -> Review {
        let mut review = Review::default();
        for f in check_calls(&self.rules.tools, declared, calls) {
            note(&mut review.violations, &self.agent, f.policy);
            if review.block.is_some() {
                continue;
            }
            let blocked = if f.policy == PolicyViolation::ApprovalRequired {
                self.rules.approval_action == ApprovalAction::Block
            } else {
                self.rules.tool_call_action == Enforcement::Block
            };
            if blocked {
                let message = match f.policy {
                    PolicyViolation::ApprovalRequired => format!(
                        "the model called tool '{}', which requires human approval; tokenwarden withheld the response",
                        f.tool
                    ),
                    PolicyViolation::DeniedTool => format!(
                        "the model called tool '{}', which agent '{}' may not use; tokenwarden withheld the response",
                        f.tool, self.agent
                    ),
                    PolicyViolation::UndeclaredTool => format!(
                        "the model called tool '{}', which the request did not declare; tokenwarden withheld the response",
                        f.tool
                    ),
                    _ => format!(
                        "the model called tool '{}' with arguments that do not match its schema; tokenwarden withheld the response",
                        f.tool
                    ),
                };
                review.block = Some(PolicyError::Refused {
                    policy: f.policy,
                    message,
                });
            }
        }
        review
    }
}

/// Apply `edit` to the owned `Value` of `doc` (built here, for a rewrite only); when it changed
/// the body, `doc` becomes the document of the rewritten bytes. Whether it changed.
fn rewrite(doc: &mut Doc, edit: impl FnOnce(&mut Value) -> bool) -> bool {
    let mut v = doc.to_value();
    if !edit(&mut v) {
        return false;
    }
    // A `Value` always serializes, and its text always reads back.
    match serde_json::to_vec(&v)
        .map_err(DocError::from)
        .and_then(|b| Doc::parse(Bytes::from(b)))
    {
        Ok(d) => {
            *doc = d;
            true
        }
        Err(_) => false,
    }
}

/// Estimated input tokens for the context guard, and whether the tokenizer gave it. The
/// tokenizer costs about 20 µs per KiB of text, so it runs only when a call may come near its
/// window: below half the window by a cheap estimate (a quarter token per body byte; JSON syntax
/// and media make that generous for all but the densest text) the cheap estimate stands. `doc`
/// is the body already parsed, when the policies parsed it: its text is read without a second
/// parse.
fn context_estimate(
    format: crate::providers::Format,
    body: &[u8],
    doc: Option<Node<'_>>,
    output: u64,
    window: u64,
) -> (u64, Option<u64>) {
    let cheap = body.len() as u64 / 4;
    if cheap.saturating_add(output).saturating_mul(2) < window {
        return (cheap, None);
    }
    let exact = match doc {
        Some(d) => crate::providers::estimate_input_doc(format, d),
        None => crate::providers::estimate_input(format, body),
    };
    (exact, Some(exact))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from_str;

    #[test]
    fn bad_policies_are_load_errors_naming_the_key() {
        let cases = [
            (
                "agents:\n  a:\n    forbidden_input:\n      - { id: x, regex: \"(\" }\n",
                "agents.a.forbidden_input[0]",
            ),
            (
                "agents:\n  a:\n    forbidden_input:\n      - { id: x }\n",
                "agents.a.forbidden_input[0]",
            ),
            (
                "agents:\n  a:\n    loop_detection: { threshold: 1 }\n",
                "agents.a.loop_detection.threshold",
            ),
            (
                "agents:\n  a:\n    max_tokens_cap: { limit: 0 }\n",
                "agents.a.max_tokens_cap.limit",
            ),
            ("agents:\n  a:\n    max_steps: 0\n", "agents.a.max_steps"),
            (
                "models:\n  m: { context_window: 0 }\n",
                "models.m.context_window",
            ),
            (
                "agents:\n  a:\n    tool_call_action: maybe\n",
                "tool_call_action",
            ),
        ];
        for (text, key) in cases {
            let err = load_from_str(text, "c.yaml").unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} -> {err}");
        }
    }

    #[test]
    fn agents_without_an_entry_get_the_star_rules_or_the_defaults() {
        let c = load_from_str(
            "agents:\n  a:\n    max_steps: 3\n  \"*\":\n    max_steps: 9\n",
            "t",
        )
        .unwrap();
        let set = PolicySet::from_config(&c).unwrap();
        assert_eq!(set.rules_for("a").max_steps, Some(3));
        assert_eq!(set.rules_for("someone").max_steps, Some(9));
        let none = PolicySet::from_config(&load_from_str("", "t").unwrap()).unwrap();
        let d = none.rules_for("x");
        assert!(d.max_steps.is_none() && d.loop_detection.enabled);
        assert_eq!(d.tool_call_action, Enforcement::Flag);
        assert_eq!(none.catalog().window("gpt-4o"), Some(128_000));
    }
}
