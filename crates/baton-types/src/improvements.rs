//! Self-improvement analysis: from measured facts about one tenant over a window, suggestions a
//! person could apply, and the impact an applied suggestion had.
//!
//! **Baton never applies a suggestion.** Each names the exact API call that would make the
//! change (a `PATCH` carries the `If-Match` of the agent version the figures were read at) and
//! the [`Metric`] its impact is measured by: the same figure over a window before and a window
//! after the suggestion was marked applied ([`impact`]).
//!
//! **Invariants.** Pure: no I/O, no clock. No rule speaks of a subject (agent, capability or
//! task type) with fewer than [`MIN_CALLS`] calls in the window, and no metric is measured over
//! fewer than [`MIN_SAMPLES`] calls. A rule and a subject identify a suggestion: [`analyze`]
//! yields each pair at most once, sorted by priority, rule and subject, and at most
//! [`MAX_SUGGESTIONS`]. Calls are grouped once in `BTreeMap`s and each group is walked (and
//! sorted for a percentile) a bounded number of times, so the analysis is O(n log n) in the
//! calls, of which it reads at most [`MAX_CALLS`]. Rules and [`measure`] share one helper per
//! figure, so a suggestion's evidence and its measured impact agree.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::agent::MAX_TIMEOUT_MS;
use crate::registry::etag;
use SuggestionPriority as P;

/// Calls of a subject in the window before any rule speaks of it: fewer say too little.
pub const MIN_CALLS: usize = 10;
/// Matching calls a window needs before a metric is measured in it.
pub const MIN_SAMPLES: usize = 10;
/// The most suggestions one analysis returns, the most urgent first.
pub const MAX_SUGGESTIONS: usize = 50;
/// The most calls one analysis or measure reads; the caller passes the window's newest.
pub const MAX_CALLS: usize = 200_000;
/// raise_max_concurrency: this share of an agent's calls waited for a free slot...
pub const BUSY_SHARE: f64 = 0.3;
/// ...or its p50 queue wait reached this, with some busy waits.
pub const SLOW_QUEUE_WAIT_MS: u64 = 1_000;
/// Later latency within this factor of earlier latency: the agent is not saturated itself, so
/// more calls at once will not just slow each one down.
pub const FLAT_LATENCY_RATIO: f64 = 1.2;
/// The highest concurrency suggested: beyond it, the agent's owner should size it.
pub const MAX_SUGGESTED_CONCURRENCY: u32 = 1_000;
/// add_fallback: below this success rate the lone agent is failing now, not just a risk.
pub const FALLBACK_URGENT_SUCCESS_RATE: f64 = 0.9;
/// disable_failing_agent: an agent failing most of its calls costs more than it gives...
pub const FAILING_SUCCESS_RATE: f64 = 0.5;
/// ...and one whose circuit opened this often in a window is flapping.
pub const FAILING_CIRCUIT_OPENS: u32 = 3;
/// raise_timeout: this share of an agent's calls timed out...
pub const TIMEOUT_SHARE: f64 = 0.1;
/// ...while its successes' p90 came this close to it: the time-out cuts off work that would
/// have succeeded.
pub const TIMEOUT_NEAR: f64 = 0.7;
/// The raised time-out leaves this headroom over the successes' p99.
pub const TIMEOUT_HEADROOM: f64 = 1.5;
/// raise_priority: a call that started with less than this share of its budget (slack plus
/// queue wait) left was late...
pub const LATE_SLACK_SHARE: f64 = 0.2;
/// ...and this share of late or missed calls says the task type waits behind others...
pub const LATE_SHARE: f64 = 0.2;
/// ...and this share, that most of its deadlines are at risk.
pub const URGENT_LATE_SHARE: f64 = 0.5;
/// The highest multiplier suggested: the API takes up to 100, but more would starve the rest.
pub const MAX_SUGGESTED_MULTIPLIER: f64 = 10.0;
/// use_learned_routing: the capability's success rate is this far below its best agent's...
pub const SUCCESS_GAP: f64 = 0.1;
/// ...or its p50 latency this many times its fastest agent's.
pub const LATENCY_GAP: f64 = 1.5;
/// reduce_tokens: mean tokens (input plus output) per call of a token-heavy task type...
pub const TOKEN_HEAVY: u64 = 4_000;
/// ...and of one worth attending to soon.
pub const TOKEN_VERY_HEAVY: u64 = 16_000;
/// The output-token percentile `max_tokens` is set near: only the longest answers are cut.
pub const MAX_TOKENS_PERCENTILE: f64 = 90.0;
/// `max_tokens` is suggested in steps of this many tokens.
pub const MAX_TOKENS_STEP: u64 = 64;

/// The strategy a capability routes with when it is not configured.
const LEARNED: &str = "learned";
const TIMEOUT_FAILURE: &str = "timeout";
const DEADLINE_FAILURE: &str = "deadline_exceeded";
/// Agent names are at most 64 characters; the fallback's suffix must fit.
const FALLBACK_SUFFIX: &str = "-fallback";
const MAX_AGENT_NAME_CHARS: usize = 64;
/// Floating-point slack for the `≥` comparisons of rates.
const EPSILON: f64 = 1e-9;

/// The measured facts about one tenant over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub agents: Vec<AgentFacts>,
    pub calls: Vec<CallFact>,
    /// The routing strategy each capability is configured with (absent: `learned`, the default).
    pub strategies: BTreeMap<String, String>,
    /// The tenant's priority multipliers by task type (absent: 1.0).
    pub priority_multipliers: BTreeMap<String, f64>,
}

/// One registered agent as the registry holds it now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentFacts {
    pub name: String,
    /// `http`, `lambda`, `openai` or `bedrock`.
    pub kind: String,
    /// The openai model or the bedrock model id.
    pub model: Option<String>,
    pub capabilities: Vec<String>,
    pub enabled: bool,
    /// What a `PATCH`'s `If-Match` names.
    pub version: u64,
    pub max_concurrency: Option<u32>,
    pub timeout_ms: u64,
    /// Times its circuit opened within the window.
    pub circuit_opens: u32,
    pub has_health_check: bool,
}

/// One attempt that called an agent and ended within the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallFact {
    pub agent: String,
    pub task_type: String,
    pub capability: String,
    pub success: bool,
    /// The failure kind in snake_case, e.g. `timeout`, `http_status`, `deadline_exceeded`.
    pub failure: Option<String>,
    pub latency_ms: u64,
    /// From the task becoming ready to its call starting.
    pub queue_wait_ms: u64,
    /// Times routing found every capable agent at its concurrency limit before this call.
    pub busy_waits: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub finished_at_ms: i64,
    /// The time the task had left before its deadline when its call started (None: no deadline).
    pub deadline_slack_ms: Option<i64>,
    /// The strategy that routed it.
    pub strategy: String,
}

/// What a suggestion improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Area {
    Bottleneck,
    ResourceUse,
    ServiceHealth,
    Optimisation,
}

/// Most urgent first: the order suggestions are listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SuggestionPriority {
    High,
    Medium,
    Low,
}

/// A request to Baton's HTTP API, exactly as a person would send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiCall {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<Value>,
}

/// The figure a suggestion's impact is measured by, over the calls of one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Metric {
    QueueWaitP50 {
        capability: String,
    },
    SuccessRate {
        agent: String,
    },
    TimeoutRate {
        agent: String,
    },
    /// Over the task type's calls with a deadline: the share that missed it or started late.
    DeadlineMissRate {
        task_type: String,
    },
    TokensPerCall {
        task_type: String,
    },
    LatencyP50 {
        capability: String,
    },
    CapabilitySuccessRate {
        capability: String,
    },
}

/// A change a person could make, with the figures that argue for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Suggestion {
    /// The stable name of the rule that made it, e.g. `raise_max_concurrency`.
    pub rule: String,
    /// The agent, capability or task type it is about; with `rule`, it identifies the
    /// suggestion.
    pub subject: String,
    pub area: Area,
    pub priority: SuggestionPriority,
    pub title: String,
    /// The figures, with `window_start` and `window_end` in ms and the `calls` counted.
    pub evidence: Value,
    pub expected_impact: String,
    /// The API call that makes the change.
    pub change: ApiCall,
    pub metric: Metric,
}

/// A metric over the windows before and after a suggestion was applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Impact {
    pub metric: Metric,
    pub before: f64,
    pub after: f64,
    /// `after - before`.
    pub change: f64,
    pub before_calls: usize,
    pub after_calls: usize,
}

/// The suggestions the evidence supports: most urgent first, then by rule and subject.
pub fn analyze(evidence: &Evidence) -> Vec<Suggestion> {
    let calls = &evidence.calls[..evidence.calls.len().min(MAX_CALLS)];
    let by_agent = group(calls.iter(), |c| &c.agent);
    let by_capability = group(calls.iter(), |c| &c.capability);
    let by_task_type = group(calls.iter(), |c| &c.task_type);
    // The first registration of a name wins, so that each agent is judged once.
    let mut agents: BTreeMap<&str, &AgentFacts> = BTreeMap::new();
    for agent in &evidence.agents {
        agents.entry(&agent.name).or_insert(agent);
    }
    let mut serving: BTreeMap<&str, Vec<&AgentFacts>> = BTreeMap::new();
    for agent in agents.values().filter(|a| a.enabled) {
        for capability in &agent.capabilities {
            serving.entry(capability).or_default().push(agent);
        }
    }
    let enough = |calls: &&Vec<&CallFact>| calls.len() >= MIN_CALLS;

    let mut out = Vec::new();
    for agent in agents.values().filter(|a| a.enabled) {
        let Some(calls) = by_agent.get(agent.name.as_str()).filter(enough) else {
            continue;
        };
        out.extend(raise_max_concurrency(evidence, agent, calls));
        out.extend(disable_failing_agent(evidence, agent, calls, &serving));
        out.extend(raise_timeout(evidence, agent, calls));
    }
    for (capability, calls) in by_capability.iter().filter(|(_, c)| enough(c)) {
        out.extend(add_fallback(
            evidence, capability, calls, &serving, &by_agent,
        ));
        out.extend(use_learned_routing(evidence, capability, calls));
    }
    for (task_type, calls) in by_task_type.iter().filter(|(_, c)| enough(c)) {
        out.extend(raise_priority(evidence, task_type, calls));
        out.extend(reduce_tokens(evidence, task_type, calls, &agents));
    }
    out.sort_by(|a, b| {
        (a.priority.cmp(&b.priority))
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.subject.cmp(&b.subject))
    });
    out.truncate(MAX_SUGGESTIONS);
    out
}

/// The metric over `calls`; None when fewer than [`MIN_SAMPLES`] of them match it.
pub fn measure(metric: &Metric, calls: &[CallFact]) -> Option<f64> {
    sample(metric, calls).map(|(value, _)| value)
}

/// The metric before and after; None unless both windows hold [`MIN_SAMPLES`] matching calls.
pub fn impact(metric: &Metric, before: &[CallFact], after: &[CallFact]) -> Option<Impact> {
    let (before_value, before_calls) = sample(metric, before)?;
    let (after_value, after_calls) = sample(metric, after)?;
    Some(Impact {
        metric: metric.clone(),
        before: before_value,
        after: after_value,
        change: round(after_value - before_value),
        before_calls,
        after_calls,
    })
}

fn sample(metric: &Metric, calls: &[CallFact]) -> Option<(f64, usize)> {
    let matching: Vec<&CallFact> = calls
        .iter()
        .take(MAX_CALLS)
        .filter(|c| metric.counts(c))
        .collect();
    if matching.len() < MIN_SAMPLES {
        return None;
    }
    Some((metric.value(&matching)?, matching.len()))
}

impl Metric {
    /// Whether the metric is measured over `call`.
    fn counts(&self, call: &CallFact) -> bool {
        match self {
            Metric::QueueWaitP50 { capability }
            | Metric::LatencyP50 { capability }
            | Metric::CapabilitySuccessRate { capability } => call.capability == *capability,
            Metric::SuccessRate { agent } | Metric::TimeoutRate { agent } => call.agent == *agent,
            Metric::DeadlineMissRate { task_type } => {
                call.task_type == *task_type && call.deadline_slack_ms.is_some()
            }
            Metric::TokensPerCall { task_type } => call.task_type == *task_type,
        }
    }

    /// The figure over calls that it counts.
    fn value(&self, calls: &[&CallFact]) -> Option<f64> {
        let value = match self {
            Metric::QueueWaitP50 { .. } => p50(calls, |c| c.queue_wait_ms)? as f64,
            Metric::LatencyP50 { .. } => p50(calls, |c| c.latency_ms)? as f64,
            Metric::SuccessRate { .. } | Metric::CapabilitySuccessRate { .. } => {
                share(calls, |c| c.success)
            }
            Metric::TimeoutRate { .. } => share(calls, timed_out),
            Metric::DeadlineMissRate { .. } => late_share(calls),
            Metric::TokensPerCall { .. } => tokens_per_call(calls),
        };
        Some(round(value))
    }
}

/// Nearest-rank percentile (`p` from 0 to 100) of a sorted copy of `values`; None when empty.
fn percentile(values: impl IntoIterator<Item = u64>, p: f64) -> Option<u64> {
    let mut sorted: Vec<u64> = values.into_iter().collect();
    sorted.sort_unstable();
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

pub(crate) fn p50(calls: &[&CallFact], figure: impl Fn(&CallFact) -> u64) -> Option<u64> {
    percentile(calls.iter().map(|c| figure(c)), 50.0)
}

/// The share of `calls` for which `test` holds; 0 for none.
fn share(calls: &[&CallFact], test: impl Fn(&CallFact) -> bool) -> f64 {
    let hits = calls.iter().filter(|c| test(c)).count();
    hits as f64 / calls.len().max(1) as f64
}

fn timed_out(call: &CallFact) -> bool {
    call.failure.as_deref() == Some(TIMEOUT_FAILURE)
}

/// Whether a call missed its deadline or started with under [`LATE_SLACK_SHARE`] of its budget
/// left; None when its task had no deadline.
fn late(call: &CallFact) -> Option<bool> {
    let slack = call.deadline_slack_ms? as f64;
    let budget = slack + call.queue_wait_ms as f64;
    Some(call.failure.as_deref() == Some(DEADLINE_FAILURE) || slack < LATE_SLACK_SHARE * budget)
}

/// The share of late calls among those with a deadline.
fn late_share(calls: &[&CallFact]) -> f64 {
    let (late_calls, with_deadline) = calls
        .iter()
        .filter_map(|c| late(c))
        .fold((0usize, 0usize), |(hits, all), is_late| {
            (hits + usize::from(is_late), all + 1)
        });
    late_calls as f64 / with_deadline.max(1) as f64
}

fn tokens_per_call(calls: &[&CallFact]) -> f64 {
    let tokens: u64 = calls
        .iter()
        .map(|c| c.input_tokens.saturating_add(c.output_tokens))
        .fold(0, u64::saturating_add);
    tokens as f64 / calls.len().max(1) as f64
}

/// Four decimals: enough for a rate, and stable to read.
fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn percent(rate: f64) -> String {
    format!("{:.0}%", rate * 100.0)
}

pub(crate) fn group<'a>(
    calls: impl Iterator<Item = &'a CallFact>,
    key: impl Fn(&'a CallFact) -> &'a String,
) -> BTreeMap<&'a str, Vec<&'a CallFact>> {
    let mut groups: BTreeMap<&str, Vec<&CallFact>> = BTreeMap::new();
    for call in calls {
        groups.entry(key(call).as_str()).or_default().push(call);
    }
    groups
}

/// The figures with the window and the call count first.
fn figures(evidence: &Evidence, calls: usize, figures: Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("window_start".into(), json!(evidence.window_start_ms));
    out.insert("window_end".into(), json!(evidence.window_end_ms));
    out.insert("calls".into(), json!(calls));
    if let Value::Object(fields) = figures {
        out.extend(fields);
    }
    Value::Object(out)
}

impl ApiCall {
    fn new(method: &str, path: String, body: Option<Value>) -> ApiCall {
        ApiCall {
            method: method.into(),
            path,
            headers: BTreeMap::new(),
            body,
        }
    }

    /// A merge patch of the agent, refused if it changed since the figures were read.
    fn patch_agent(agent: &AgentFacts, body: Value) -> ApiCall {
        let mut call = ApiCall::new("PATCH", format!("/v1/agents/{}", agent.name), Some(body));
        call.headers.insert("If-Match".into(), etag(agent.version));
        call
    }
}

fn raise_max_concurrency(
    evidence: &Evidence,
    agent: &AgentFacts,
    calls: &[&CallFact],
) -> Option<Suggestion> {
    let limit = agent.max_concurrency?;
    let busy_share = share(calls, |c| c.busy_waits > 0);
    let wait_p50 = p50(calls, |c| c.queue_wait_ms)?;
    let slow_wait = busy_share > 0.0 && wait_p50 >= SLOW_QUEUE_WAIT_MS;
    if busy_share + EPSILON < BUSY_SHARE && !slow_wait {
        return None;
    }
    let mut in_order = calls.to_vec();
    in_order.sort_by_key(|c| c.finished_at_ms);
    let (earlier, later) = in_order.split_at(in_order.len() / 2);
    let earlier_p50 = p50(earlier, |c| c.latency_ms)?;
    let later_p50 = p50(later, |c| c.latency_ms)?;
    let raised =
        (limit.saturating_mul(2).max(limit.saturating_add(1))).min(MAX_SUGGESTED_CONCURRENCY);
    if later_p50 as f64 > FLAT_LATENCY_RATIO * earlier_p50 as f64 || raised <= limit {
        return None;
    }
    // Measured on the capability it waited longest on (the first by name on a tie).
    let mut waits: BTreeMap<&str, u64> = BTreeMap::new();
    for call in calls {
        let wait = waits.entry(&call.capability).or_default();
        *wait = wait.saturating_add(call.queue_wait_ms);
    }
    let capability = waits.into_iter().min_by_key(|&(_, wait)| Reverse(wait))?.0;
    let title = format!(
        "Raise {}'s max_concurrency from {limit} to {raised}: {} of its calls waited for a slot.",
        agent.name,
        percent(busy_share)
    );
    Some(Suggestion {
        rule: "raise_max_concurrency".into(),
        subject: agent.name.clone(),
        area: Area::Bottleneck,
        priority: if slow_wait { P::High } else { P::Medium },
        title,
        evidence: figures(
            evidence,
            calls.len(),
            json!({
                "max_concurrency": limit,
                "busy_share": round(busy_share),
                "queue_wait_p50_ms": wait_p50,
                "latency_p50_ms_earlier": earlier_p50,
                "latency_p50_ms_later": later_p50,
            }),
        ),
        expected_impact: format!("Shorter queue waits on {capability}: its latency held steady."),
        change: ApiCall::patch_agent(agent, json!({ "max_concurrency": raised })),
        metric: Metric::QueueWaitP50 {
            capability: capability.into(),
        },
    })
}

fn disable_failing_agent(
    evidence: &Evidence,
    agent: &AgentFacts,
    calls: &[&CallFact],
    serving: &BTreeMap<&str, Vec<&AgentFacts>>,
) -> Option<Suggestion> {
    let success_rate = share(calls, |c| c.success);
    if success_rate >= FAILING_SUCCESS_RATE && agent.circuit_opens < FAILING_CIRCUIT_OPENS {
        return None;
    }
    // Another enabled agent sharing one of its capabilities takes its calls when it is disabled.
    let backup = agent.capabilities.iter().find_map(|capability| {
        let others = serving.get(capability.as_str())?;
        Some((
            capability,
            &others.iter().find(|o| o.name != agent.name)?.name,
        ))
    });
    let (name, rate) = (&agent.name, percent(success_rate));
    let why = format!(
        "{rate} of its calls succeeded, its circuit opened {} times",
        agent.circuit_opens
    );
    let (title, expected_impact) = match backup {
        Some((capability, other)) => (
            format!("Disable {name}: {why}; {other} also serves {capability}."),
            "Its calls go to agents that share its capabilities and fail less.",
        ),
        None if agent.has_health_check => (
            format!("Fix {name}: {why}, and no other enabled agent serves its capabilities."),
            "Fixed, it succeeds again; disabled, its tasks fail fast, not after retries.",
        ),
        None => (
            format!("Fix {name} or add a health check to it: {why}, and it has no backup."),
            "Fixed, it succeeds again; disabled, its tasks fail fast, not after retries.",
        ),
    };
    Some(Suggestion {
        rule: "disable_failing_agent".into(),
        subject: name.clone(),
        area: Area::ServiceHealth,
        priority: P::High,
        title,
        evidence: figures(
            evidence,
            calls.len(),
            json!({
                "success_rate": round(success_rate),
                "circuit_opens": agent.circuit_opens,
                "backup": backup.map(|(_, other)| other),
            }),
        ),
        expected_impact: expected_impact.into(),
        change: ApiCall::new("POST", format!("/v1/agents/{name}/disable"), None),
        // Disabled, it takes no calls: what changes is how its capability fares.
        metric: match backup {
            Some((capability, _)) => Metric::CapabilitySuccessRate {
                capability: capability.clone(),
            },
            None => Metric::SuccessRate {
                agent: name.clone(),
            },
        },
    })
}

fn raise_timeout(
    evidence: &Evidence,
    agent: &AgentFacts,
    calls: &[&CallFact],
) -> Option<Suggestion> {
    let timeout_share = share(calls, timed_out);
    let successes = || calls.iter().filter(|c| c.success).map(|c| c.latency_ms);
    let success_p90 = percentile(successes(), 90.0)?;
    let near = success_p90 as f64 >= TIMEOUT_NEAR * agent.timeout_ms as f64;
    if timeout_share + EPSILON < TIMEOUT_SHARE || !near {
        return None;
    }
    let success_p99 = percentile(successes(), 99.0)?;
    let headroom = (success_p99 as f64 * TIMEOUT_HEADROOM).ceil() as u64;
    let raised = agent
        .timeout_ms
        .saturating_mul(2)
        .max(headroom)
        .min(MAX_TIMEOUT_MS);
    if raised <= agent.timeout_ms {
        return None;
    }
    let name = &agent.name;
    let title = format!(
        "Raise {name}'s timeout_ms from {} to {raised}: {} of its calls timed out.",
        agent.timeout_ms,
        percent(timeout_share)
    );
    Some(Suggestion {
        rule: "raise_timeout".into(),
        subject: name.clone(),
        area: Area::Optimisation,
        priority: P::Medium,
        title,
        evidence: figures(
            evidence,
            calls.len(),
            json!({
                "timeout_ms": agent.timeout_ms,
                "timeout_share": round(timeout_share),
                "success_latency_p90_ms": success_p90,
                "success_latency_p99_ms": success_p99,
            }),
        ),
        expected_impact: "Fewer time-outs: its successes took nearly as long as it allows.".into(),
        change: ApiCall::patch_agent(agent, json!({ "timeout_ms": raised })),
        metric: Metric::TimeoutRate {
            agent: name.clone(),
        },
    })
}

fn add_fallback(
    evidence: &Evidence,
    capability: &str,
    calls: &[&CallFact],
    serving: &BTreeMap<&str, Vec<&AgentFacts>>,
    by_agent: &BTreeMap<&str, Vec<&CallFact>>,
) -> Option<Suggestion> {
    let [agent] = serving.get(capability)?.as_slice() else {
        return None;
    };
    let name = &agent.name;
    let success_rate = by_agent.get(name.as_str()).map(|c| share(c, |c| c.success));
    let urgent = success_rate.is_some_and(|rate| rate < FALLBACK_URGENT_SUCCESS_RATE);
    // A capability may hold `:`, which agent names may not.
    let stem: String = (capability.chars())
        .map(|c| if c == ':' { '-' } else { c })
        .take(MAX_AGENT_NAME_CHARS - FALLBACK_SUFFIX.len())
        .collect();
    let registration = json!({
        "name": format!("{stem}{FALLBACK_SUFFIX}"),
        "kind": "http",
        "endpoint": "https://REPLACE-ME.example.com/agent",
        "capabilities": [capability],
    });
    Some(Suggestion {
        rule: "add_fallback".into(),
        subject: capability.into(),
        area: Area::ServiceHealth,
        priority: if urgent { P::High } else { P::Medium },
        title: format!("Register a second agent for {capability}: only {name} serves it."),
        evidence: figures(
            evidence,
            calls.len(),
            json!({ "agent": name, "success_rate": success_rate.map(round) }),
        ),
        expected_impact: format!("Tasks needing {capability} keep running when {name} fails."),
        change: ApiCall::new("POST", "/v1/agents".into(), Some(registration)),
        metric: Metric::SuccessRate {
            agent: name.clone(),
        },
    })
}

fn use_learned_routing(
    evidence: &Evidence,
    capability: &str,
    calls: &[&CallFact],
) -> Option<Suggestion> {
    let strategy = evidence
        .strategies
        .get(capability)
        .map_or(LEARNED, String::as_str);
    // The capability's calls routed by its strategy, against each agent's own record on it.
    let routed: Vec<&CallFact> = calls
        .iter()
        .copied()
        .filter(|c| c.strategy == strategy)
        .collect();
    if strategy == LEARNED || routed.len() < MIN_CALLS {
        return None;
    }
    let mut best: Option<(&str, f64)> = None;
    let mut fastest: Option<(&str, u64)> = None;
    for (agent, agent_calls) in group(calls.iter().copied(), |c| &c.agent) {
        if agent_calls.len() < MIN_CALLS {
            continue;
        }
        let rate = share(&agent_calls, |c| c.success);
        if best.is_none_or(|(_, best_rate)| rate > best_rate) {
            best = Some((agent, rate));
        }
        let latency = p50(&agent_calls, |c| c.latency_ms)?;
        if fastest.is_none_or(|(_, fastest_latency)| latency < fastest_latency) {
            fastest = Some((agent, latency));
        }
    }
    let ((best_agent, best_rate), (fastest_agent, fastest_p50)) = (best?, fastest?);
    let success_rate = share(&routed, |c| c.success);
    let latency_p50 = p50(&routed, |c| c.latency_ms)?;
    let (reason, priority, metric) = if best_rate - success_rate + EPSILON >= SUCCESS_GAP {
        let (rate, best) = (percent(success_rate), percent(best_rate));
        let reason = format!("{rate} of its calls succeeded, {best} of {best_agent}'s");
        (
            reason,
            P::Medium,
            Metric::CapabilitySuccessRate {
                capability: capability.into(),
            },
        )
    } else if latency_p50 as f64 >= LATENCY_GAP * fastest_p50 as f64 && latency_p50 > fastest_p50 {
        let reason =
            format!("its p50 latency was {latency_p50} ms, {fastest_agent}'s {fastest_p50}");
        (
            reason,
            P::Low,
            Metric::LatencyP50 {
                capability: capability.into(),
            },
        )
    } else {
        return None;
    };
    let title = format!("Route {capability} with the learned strategy, not {strategy}: {reason}.");
    Some(Suggestion {
        rule: "use_learned_routing".into(),
        subject: capability.into(),
        area: Area::Optimisation,
        priority,
        title,
        evidence: figures(
            evidence,
            routed.len(),
            json!({
                "strategy": strategy,
                "success_rate": round(success_rate),
                "latency_p50_ms": latency_p50,
                "best_agent": best_agent,
                "best_success_rate": round(best_rate),
                "fastest_agent": fastest_agent,
                "fastest_latency_p50_ms": fastest_p50,
            }),
        ),
        expected_impact: "More of its calls go to the agents that succeed sooner.".into(),
        change: ApiCall::new(
            "PUT",
            format!("/v1/capabilities/{capability}"),
            Some(json!({ "routing": LEARNED })),
        ),
        metric,
    })
}

fn raise_priority(evidence: &Evidence, task_type: &str, calls: &[&CallFact]) -> Option<Suggestion> {
    let with_deadline = calls
        .iter()
        .filter(|c| c.deadline_slack_ms.is_some())
        .count();
    let late_rate = late_share(calls);
    if with_deadline < MIN_CALLS || late_rate + EPSILON < LATE_SHARE {
        return None;
    }
    let current = evidence
        .priority_multipliers
        .get(task_type)
        .map_or(1.0, |m| *m);
    let raised = (current * 2.0).min(MAX_SUGGESTED_MULTIPLIER);
    if raised <= current {
        return None;
    }
    // `PUT` replaces the tenant's multipliers, so the others are sent unchanged.
    let mut multipliers = evidence.priority_multipliers.clone();
    multipliers.insert(task_type.to_string(), raised);
    let title = format!(
        "Raise {task_type}'s priority multiplier from {current} to {raised}: {} of its calls \
         with a deadline missed it or started late.",
        percent(late_rate)
    );
    Some(Suggestion {
        rule: "raise_priority".into(),
        subject: task_type.into(),
        area: Area::Bottleneck,
        priority: if late_rate >= URGENT_LATE_SHARE {
            P::High
        } else {
            P::Medium
        },
        title,
        evidence: figures(
            evidence,
            with_deadline,
            json!({
                "late_share": round(late_rate),
                "queue_wait_p50_ms": p50(calls, |c| c.queue_wait_ms),
                "multiplier": current,
            }),
        ),
        expected_impact: format!("{task_type} tasks leave the queue sooner and meet deadlines."),
        change: ApiCall::new(
            "PUT",
            "/v1/priorities".into(),
            Some(json!({ "multipliers": multipliers })),
        ),
        metric: Metric::DeadlineMissRate {
            task_type: task_type.into(),
        },
    })
}

fn reduce_tokens(
    evidence: &Evidence,
    task_type: &str,
    calls: &[&CallFact],
    agents: &BTreeMap<&str, &AgentFacts>,
) -> Option<Suggestion> {
    let mean = tokens_per_call(calls);
    if mean < TOKEN_HEAVY as f64 {
        return None;
    }
    // The model agent that took most of its calls (the first by name on a tie).
    let (agent, agent_calls) = group(calls.iter().copied(), |c| &c.agent)
        .into_iter()
        .filter_map(|(name, calls)| Some((*agents.get(name)?, calls)))
        .filter(|(agent, _)| matches!(agent.kind.as_str(), "openai" | "bedrock"))
        .min_by_key(|(_, calls)| Reverse(calls.len()))?;
    let output = agent_calls.iter().map(|c| c.output_tokens);
    let output = percentile(output, MAX_TOKENS_PERCENTILE)?;
    let max_tokens = output.div_ceil(MAX_TOKENS_STEP).max(1) * MAX_TOKENS_STEP;
    // Bedrock takes the cap in its inference settings, openai in the request's parameters.
    let field = if agent.kind == "bedrock" {
        "inference"
    } else {
        "parameters"
    };
    let name = &agent.name;
    let title = format!(
        "Use a cheaper model or a shorter prompt for {task_type} ({mean:.0} tokens a call), \
         and cap {name}'s max_tokens at {max_tokens}."
    );
    Some(Suggestion {
        rule: "reduce_tokens".into(),
        subject: task_type.into(),
        area: Area::ResourceUse,
        priority: if mean >= TOKEN_VERY_HEAVY as f64 {
            P::Medium
        } else {
            P::Low
        },
        title,
        evidence: figures(
            evidence,
            calls.len(),
            json!({
                "tokens_per_call": round(mean),
                "agent": name,
                "model": agent.model,
                "output_tokens_p50": output,
            }),
        ),
        expected_impact: format!(
            "Fewer tokens per call; the cap binds all of {name}'s task types."
        ),
        change: ApiCall::patch_agent(agent, json!({ field: { "max_tokens": max_tokens } })),
        metric: Metric::TokensPerCall {
            task_type: task_type.into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, kind: &str, capability: &str) -> AgentFacts {
        let capabilities = vec![capability.to_string()];
        let (name, kind) = (name.to_string(), kind.to_string());
        let timeout_ms = 30_000;
        AgentFacts {
            name,
            kind,
            capabilities,
            enabled: true,
            version: 3,
            timeout_ms,
            ..Default::default()
        }
    }

    /// A quick, successful, unhurried call.
    fn call(agent: &str, capability: &str, i: usize) -> CallFact {
        CallFact {
            agent: agent.into(),
            task_type: format!("{capability}-task"),
            capability: capability.into(),
            success: true,
            latency_ms: 100 + (i % 5) as u64,
            queue_wait_ms: 50,
            input_tokens: 500,
            output_tokens: 200,
            finished_at_ms: 1_000 * i as i64,
            deadline_slack_ms: Some(10_000),
            strategy: LEARNED.into(),
            ..CallFact::default()
        }
    }

    /// Two agents per capability, 20 healthy calls each.
    fn healthy() -> Evidence {
        let agents = vec![
            agent("a1", "openai", "summarise"),
            agent("a2", "bedrock", "summarise"),
            agent("b1", "http", "search"),
            agent("b2", "http", "search"),
        ];
        let calls = (agents.iter())
            .flat_map(|a| (0..20).map(|i| call(&a.name, &a.capabilities[0], i)))
            .collect();
        let (window_start_ms, window_end_ms) = (0, 60_000);
        Evidence {
            window_start_ms,
            window_end_ms,
            agents,
            calls,
            ..Evidence::default()
        }
    }

    /// Changes the agent's calls; `change` gets the call's index among them.
    fn edit(e: &mut Evidence, agent: &str, change: impl Fn(usize, &mut CallFact)) {
        let calls = e.calls.iter_mut().filter(|c| c.agent == agent);
        calls.enumerate().for_each(|(i, c)| change(i, c));
    }

    fn agent_mut<'a>(e: &'a mut Evidence, name: &str) -> &'a mut AgentFacts {
        e.agents.iter_mut().find(|a| a.name == name).expect("agent")
    }

    /// Fails the first `n` calls with `kind`.
    fn fail_first(n: usize, kind: &str) -> impl Fn(usize, &mut CallFact) + '_ {
        move |i, c| {
            if i < n {
                (c.success, c.failure) = (false, Some(kind.into()));
            }
        }
    }

    fn rules(suggestions: &[Suggestion]) -> Vec<(&str, &str)> {
        let pairs = suggestions
            .iter()
            .map(|s| (s.rule.as_str(), s.subject.as_str()));
        pairs.collect()
    }

    /// The one suggestion the evidence makes, which must be `rule` on `subject`.
    fn only(e: &Evidence, rule: &str, subject: &str) -> Suggestion {
        let suggestions = analyze(e);
        assert_eq!(rules(&suggestions), [(rule, subject)]);
        suggestions.into_iter().next().expect("one suggestion")
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile([5, 1, 4, 2, 3], 50.0), Some(3));
        assert_eq!(percentile(1..=10, 90.0), Some(9));
        assert_eq!(percentile(1..=10, 99.0), Some(10));
        assert_eq!(percentile([7], 0.0), Some(7));
        assert_eq!(percentile([], 50.0), None);
    }

    #[test]
    fn a_healthy_history_suggests_nothing() {
        assert!(analyze(&healthy()).is_empty());
    }

    #[test]
    fn too_few_calls_suggest_nothing() {
        let mut e = healthy();
        e.calls
            .retain(|c| c.agent == "b1" && c.finished_at_ms < 9_000);
        edit(&mut e, "b1", fail_first(9, TIMEOUT_FAILURE));
        agent_mut(&mut e, "b2").enabled = false;
        assert!(analyze(&e).is_empty());
    }

    #[test]
    fn a_full_agent_with_flat_latency_gets_more_concurrency() {
        let mut e = healthy();
        agent_mut(&mut e, "a1").max_concurrency = Some(4);
        edit(&mut e, "a1", |i, c| c.busy_waits = u32::from(i % 5 < 2));
        let s = only(&e, "raise_max_concurrency", "a1");
        assert_eq!(
            (s.change.method.as_str(), s.change.path.as_str()),
            ("PATCH", "/v1/agents/a1")
        );
        assert_eq!(s.change.headers["If-Match"], "\"3\"");
        assert_eq!(s.change.body, Some(json!({"max_concurrency": 8})));
        assert_eq!(
            json!(s.metric),
            json!({"kind": "queue_wait_p50", "capability": "summarise"})
        );
        assert_eq!(s.evidence["calls"], 20);
        assert_eq!(s.evidence["window_end"], 60_000);

        agent_mut(&mut e, "a1").max_concurrency = Some(MAX_SUGGESTED_CONCURRENCY);
        assert!(analyze(&e).is_empty(), "already at the cap");
    }

    #[test]
    fn a_full_agent_whose_latency_rises_keeps_its_concurrency() {
        let mut e = healthy();
        agent_mut(&mut e, "a1").max_concurrency = Some(4);
        edit(&mut e, "a1", |i, c| {
            (c.busy_waits, c.latency_ms) = (1, if i < 10 { 100 } else { 300 })
        });
        assert!(analyze(&e).is_empty());
    }

    #[test]
    fn a_lone_failing_agent_gets_an_urgent_fallback() {
        let mut e = healthy();
        agent_mut(&mut e, "a2").enabled = false;
        edit(&mut e, "a1", fail_first(3, "http_status"));
        let s = only(&e, "add_fallback", "summarise");
        assert_eq!(s.priority, SuggestionPriority::High);
        assert_eq!(
            (s.change.method.as_str(), s.change.path.as_str()),
            ("POST", "/v1/agents")
        );
        assert_eq!(
            s.change.body.expect("a registration")["name"],
            "summarise-fallback"
        );
        assert_eq!(s.metric, Metric::SuccessRate { agent: "a1".into() });
    }

    #[test]
    fn a_failing_agent_with_a_backup_is_disabled() {
        let mut e = healthy();
        edit(&mut e, "a1", fail_first(15, "http_status"));
        let s = only(&e, "disable_failing_agent", "a1");
        assert_eq!(
            s.change,
            ApiCall::new("POST", "/v1/agents/a1/disable".into(), None)
        );
        assert!(s.title.starts_with("Disable a1"), "{}", s.title);

        let mut flapping = healthy();
        agent_mut(&mut flapping, "b2").circuit_opens = FAILING_CIRCUIT_OPENS;
        only(&flapping, "disable_failing_agent", "b2");
    }

    #[test]
    fn a_failing_lone_agent_is_to_be_fixed() {
        let mut e = healthy();
        agent_mut(&mut e, "b2").enabled = false;
        edit(&mut e, "b1", fail_first(20, "http_status"));
        let s = analyze(&e);
        assert_eq!(
            rules(&s),
            [("add_fallback", "search"), ("disable_failing_agent", "b1")]
        );
        assert!(
            s[1].title.starts_with("Fix b1 or add a health check"),
            "{}",
            s[1].title
        );
    }

    #[test]
    fn time_outs_near_the_successes_latency_raise_the_time_out() {
        let mut e = healthy();
        agent_mut(&mut e, "b1").timeout_ms = 140;
        edit(&mut e, "b1", fail_first(2, TIMEOUT_FAILURE));
        let s = only(&e, "raise_timeout", "b1");
        assert_eq!(s.change.body, Some(json!({"timeout_ms": 280})));
        assert_eq!(s.metric, Metric::TimeoutRate { agent: "b1".into() });

        agent_mut(&mut e, "b1").timeout_ms = 1_000;
        assert!(
            analyze(&e).is_empty(),
            "its successes finish well within the time-out"
        );
    }

    #[test]
    fn a_task_type_starting_late_gets_a_higher_priority() {
        let mut e = healthy();
        e.priority_multipliers = BTreeMap::from([("search-task".into(), 6.0), ("x".into(), 0.5)]);
        edit(&mut e, "b1", |i, c| {
            c.deadline_slack_ms = Some(if i < 10 { 5 } else { 10_000 })
        });
        let s = only(&e, "raise_priority", "search-task");
        let multipliers = json!({"multipliers": {"search-task": 10.0, "x": 0.5}});
        assert_eq!(s.change.body, Some(multipliers));
        assert_eq!(
            json!(s.metric),
            json!({"kind": "deadline_miss_rate", "task_type": "search-task"})
        );

        edit(&mut e, "b1", |i, c| {
            c.deadline_slack_ms = Some(if i < 7 { 5 } else { 10_000 })
        });
        assert!(analyze(&e).is_empty(), "7 late calls of 40 are too few");
    }

    #[test]
    fn round_robin_far_below_the_best_agent_suggests_learned_routing() {
        let mut e = healthy();
        e.strategies.insert("search".into(), "round_robin".into());
        e.calls
            .iter_mut()
            .for_each(|c| c.strategy = "round_robin".into());
        edit(&mut e, "b2", fail_first(8, "http_status"));
        let s = only(&e, "use_learned_routing", "search");
        assert_eq!(s.change.path, "/v1/capabilities/search");
        assert_eq!(s.change.body, Some(json!({"routing": "learned"})));
        assert_eq!(
            json!(s.metric),
            json!({"kind": "capability_success_rate", "capability": "search"})
        );

        e.strategies.clear();
        assert!(analyze(&e).is_empty(), "already learned");
    }

    #[test]
    fn a_slow_capability_under_a_fixed_strategy_suggests_learned_routing() {
        let mut e = healthy();
        e.strategies.insert("search".into(), "round_robin".into());
        e.calls.extend((20..30).map(|i| call("b2", "search", i)));
        e.calls
            .iter_mut()
            .for_each(|c| c.strategy = "round_robin".into());
        edit(&mut e, "b2", |_, c| c.latency_ms = 400);
        let s = only(&e, "use_learned_routing", "search");
        assert_eq!(s.priority, SuggestionPriority::Low);
        assert_eq!(
            json!(s.metric),
            json!({"kind": "latency_p50", "capability": "search"})
        );
    }

    #[test]
    fn a_token_heavy_task_type_caps_its_model_agents_max_tokens() {
        let mut e = healthy();
        let heavy = |_: usize, c: &mut CallFact| (c.input_tokens, c.output_tokens) = (4_000, 300);
        edit(&mut e, "a1", heavy);
        edit(&mut e, "a2", heavy);
        let s = only(&e, "reduce_tokens", "summarise-task");
        assert_eq!(s.priority, SuggestionPriority::Low);
        assert_eq!(s.change.path, "/v1/agents/a1");
        assert_eq!(
            s.change.body,
            Some(json!({"parameters": {"max_tokens": 320}}))
        );
        assert!(
            s.title.contains("a cheaper model or a shorter prompt"),
            "{}",
            s.title
        );
        assert_eq!(
            json!(s.metric),
            json!({"kind": "tokens_per_call", "task_type": "summarise-task"})
        );

        agent_mut(&mut e, "a1").kind = "http".into();
        edit(&mut e, "a2", |_, c| c.input_tokens = 40_000);
        let s = only(&e, "reduce_tokens", "summarise-task");
        assert_eq!(s.priority, SuggestionPriority::Medium);
        assert_eq!(
            s.change.body,
            Some(json!({"inference": {"max_tokens": 320}}))
        );
    }

    #[test]
    fn suggestions_are_sorted_and_bounded() {
        let mut e = Evidence::default();
        for n in 0..30 {
            let lone = agent(&format!("lone{n:02}"), "http", &format!("cap{n:02}"));
            e.calls
                .extend((0..10).map(|i| call(&lone.name, &lone.capabilities[0], i)));
            edit(&mut e, &lone.name, fail_first(10, "http_status"));
            e.agents.push(lone);
        }
        let s = analyze(&e);
        assert_eq!(s.len(), MAX_SUGGESTIONS);
        let key = |s: &Suggestion| (s.priority, s.rule.clone(), s.subject.clone());
        assert!(s.windows(2).all(|w| key(&w[0]) < key(&w[1])));
        assert_eq!(
            rules(&s)[..2],
            [("add_fallback", "cap00"), ("add_fallback", "cap01")]
        );
    }

    #[test]
    fn a_queue_wait_drop_shows_as_a_negative_change() {
        let metric = Metric::QueueWaitP50 {
            capability: "search".into(),
        };
        let window = |queue_wait_ms| -> Vec<CallFact> {
            (0..12)
                .map(|i| CallFact {
                    queue_wait_ms,
                    ..call("b1", "search", i)
                })
                .collect()
        };
        let impact = impact(&metric, &window(500), &window(100)).expect("enough samples");
        assert_eq!(
            (impact.before, impact.after, impact.change),
            (500.0, 100.0, -400.0)
        );
        assert_eq!((impact.before_calls, impact.after_calls), (12, 12));
    }

    #[test]
    fn too_few_samples_measure_nothing() {
        let metric = Metric::SuccessRate { agent: "b1".into() };
        let calls = |n| -> Vec<CallFact> { (0..n).map(|i| call("b1", "search", i)).collect() };
        let (few, enough) = (calls(MIN_SAMPLES - 1), calls(MIN_SAMPLES));
        assert_eq!(measure(&metric, &few), None);
        assert_eq!(measure(&metric, &enough), Some(1.0));
        assert_eq!(impact(&metric, &enough, &few), None);
        assert_eq!(impact(&metric, &few, &enough), None);
    }

    #[test]
    fn areas_and_priorities_serialise_in_snake_case() {
        assert_eq!(json!(Area::ServiceHealth), json!("service_health"));
        assert_eq!(json!(SuggestionPriority::High), json!("high"));
    }
}
