//! Past results: what learning keeps of each agent call, and the questions asked of them.
//!
//! Learn writes one result per attempt that called an agent, on the item it writes for that
//! call anyway, so remembering costs no extra write: a result holds the call's figures and
//! bounded previews of its input and output ([`PREVIEW_BYTES`] each, so the item stays under
//! 1 KB). Results expire with the learning retention. Nothing here reads or writes: the store
//! answers a [`ResultQuery`] per agent, newest first, and the functions below rank and cut.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AgentName, TaskId, WorkflowId};
use crate::outcome::{FailureKind, TokenUsage};
use crate::routing::RoutingStrategy;
use crate::text::clipped;

/// The start of a call's input and of its output kept with its result, as JSON text.
pub const PREVIEW_BYTES: usize = 160;
/// The start of a failure's message kept with its result, normalised ([`normalise_failure`]).
pub const FAILURE_MESSAGE_BYTES: usize = 160;
/// The most results one question answers: the short-term memory per task type and agent.
pub const MAX_RESULTS: usize = 100;
/// The most relevant memories a task may ask for.
pub const MAX_RELEVANT: usize = 20;
/// The most words of a query or a result that relevance compares.
const MAX_WORDS: usize = 64;
/// How fast a memory's recency fades: it counts half after this long.
const RECENCY_HALF_LIFE_MS: f64 = 7.0 * 24.0 * 3_600_000.0;

/// What a task asks of memory: its agent receives the `relevant` past results of its task
/// type most like its input (see [`most_relevant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MemoryAsk {
    /// How many, from 1 to 20.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 20))]
    pub relevant: u32,
}

impl MemoryAsk {
    pub fn check(&self) -> Result<(), String> {
        if (1..=MAX_RELEVANT as u32).contains(&self.relevant) {
            Ok(())
        } else {
            Err(format!(
                "relevant must be from 1 to {MAX_RELEVANT}, got {}",
                self.relevant
            ))
        }
    }
}

/// What execute-agent knows of a call beyond its outcome, carried to learn with it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallDetails {
    /// The capability the task asked for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub capability: String,
    /// From the attempt becoming ready to its call starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_wait_ms: Option<u64>,
    /// Times routing found every capable agent at its limits before the call.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub busy_waits: u32,
    /// The strategy that chose the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RoutingStrategy>,
    /// The time the task had left before its deadline when the call started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_slack_ms: Option<i64>,
    /// The failure's message, normalised: what a failure pattern is counted by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// The start of the call's input, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_preview: Option<String>,
    /// The start of the call's output, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_preview: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One remembered call, as the store reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastResult {
    pub workflow_id: WorkflowId,
    pub task_id: TaskId,
    pub attempt: u32,
    pub agent: AgentName,
    pub task_type: String,
    pub success: bool,
    pub failure: Option<FailureKind>,
    pub latency_ms: u64,
    pub usage: Option<TokenUsage>,
    pub finished_at_ms: i64,
    #[serde(flatten)]
    pub details: CallDetails,
}

/// Which results of one agent a question wants: finished in `[since_ms, until_ms]`, newest
/// first, at most `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultQuery {
    pub task_type: Option<String>,
    /// Only successes (`Some(true)`) or only failures (`Some(false)`).
    pub success: Option<bool>,
    pub since_ms: i64,
    pub until_ms: i64,
    pub limit: usize,
}

impl ResultQuery {
    pub fn matches(&self, result: &PastResult) -> bool {
        (self.since_ms..=self.until_ms).contains(&result.finished_at_ms)
            && self
                .task_type
                .as_ref()
                .is_none_or(|t| *t == result.task_type)
            && self.success.is_none_or(|s| s == result.success)
    }
}

/// `value`'s JSON text, cut to [`PREVIEW_BYTES`].
pub fn preview(value: &Value) -> String {
    clipped(&value.to_string(), PREVIEW_BYTES)
}

/// A failure's message as patterns count it: numbers (ids, ports, sizes, times) become `#`,
/// runs of spaces one space, cut to [`FAILURE_MESSAGE_BYTES`].
pub fn normalise_failure(message: &str) -> String {
    let mut normal = String::with_capacity(message.len().min(FAILURE_MESSAGE_BYTES * 2));
    let mut in_number = false;
    let mut in_space = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                normal.push('#');
            }
            in_number = true;
            in_space = false;
            continue;
        }
        in_number = false;
        if c.is_whitespace() {
            if !in_space {
                normal.push(' ');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        normal.push(c);
        if normal.len() > FAILURE_MESSAGE_BYTES * 2 {
            break;
        }
    }
    clipped(normal.trim(), FAILURE_MESSAGE_BYTES)
}

/// The words a text is compared by: lowercase runs of letters and digits of 3 or more
/// characters, at most [`MAX_WORDS`].
pub fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .take(MAX_WORDS)
        .collect()
}

/// How relevant `result` is to a query of `query` words at `now_ms`: the share of the query's
/// words its previews hold, weighed by recency (half after a week, never below 70 %) and by
/// success (a failure counts half). Zero when no word is shared.
pub fn relevance(query: &BTreeSet<String>, result: &PastResult, now_ms: i64) -> f64 {
    if query.is_empty() {
        return 0.0;
    }
    let details = &result.details;
    let text = [&details.input_preview, &details.output_preview]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let shared = words(&text).intersection(query).count();
    if shared == 0 {
        return 0.0;
    }
    let overlap = shared as f64 / query.len() as f64;
    let age_ms = (now_ms - result.finished_at_ms).max(0) as f64;
    let recency = 0.5_f64.powf(age_ms / RECENCY_HALF_LIFE_MS);
    let success = if result.success { 1.0 } else { 0.5 };
    overlap * (0.7 + 0.3 * recency) * success
}

/// The `limit` results most relevant to `query`, best first, each with its score; results
/// sharing no word are left out.
pub fn most_relevant(
    query: &BTreeSet<String>,
    results: Vec<PastResult>,
    now_ms: i64,
    limit: usize,
) -> Vec<(f64, PastResult)> {
    let mut scored: Vec<(f64, PastResult)> = results
        .into_iter()
        .map(|r| (relevance(query, &r, now_ms), r))
        .filter(|(score, _)| *score > 0.0)
        .collect();
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(b.1.finished_at_ms.cmp(&a.1.finished_at_ms))
    });
    scored.truncate(limit);
    scored
}

/// A past result as an agent receives it among its memories.
pub fn memory_of(relevance: f64, result: &PastResult) -> Value {
    serde_json::json!({
        "workflow_id": result.workflow_id,
        "task_id": result.task_id,
        "agent": result.agent,
        "outcome": if result.success { "succeeded" } else { "failed" },
        "finished_at_ms": result.finished_at_ms,
        "input_preview": result.details.input_preview,
        "output_preview": result.details.output_preview,
        "relevance": (relevance * 1000.0).round() / 1000.0,
    })
}

/// Several agents' results (each newest first) as one list, newest first, at most `limit`.
pub fn newest_first(per_agent: Vec<Vec<PastResult>>, limit: usize) -> Vec<PastResult> {
    let mut all: Vec<PastResult> = per_agent.into_iter().flatten().collect();
    all.sort_by(|a, b| {
        b.finished_at_ms.cmp(&a.finished_at_ms).then_with(|| {
            (&a.agent, &a.workflow_id, &a.task_id).cmp(&(&b.agent, &b.workflow_id, &b.task_id))
        })
    });
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(at_ms: i64, success: bool, input: &str) -> PastResult {
        PastResult {
            workflow_id: "w".parse().unwrap(),
            task_id: format!("t{at_ms}").parse().unwrap(),
            attempt: 1,
            agent: "a".parse().unwrap(),
            task_type: "summarize".into(),
            success,
            failure: None,
            latency_ms: 10,
            usage: None,
            finished_at_ms: at_ms,
            details: CallDetails {
                input_preview: Some(preview(&json!({ "text": input }))),
                ..CallDetails::default()
            },
        }
    }

    #[test]
    fn a_preview_is_bounded_and_a_failure_message_normalised() {
        let long = json!({ "text": "x".repeat(1000) });
        assert!(preview(&long).len() <= PREVIEW_BYTES);
        assert_eq!(
            normalise_failure("upstream 503 after   1200 ms\n(port 8080)"),
            "upstream # after # ms (port #)"
        );
        assert!(normalise_failure(&"word ".repeat(500)).len() <= FAILURE_MESSAGE_BYTES);
    }

    #[test]
    fn relevance_weighs_shared_words_recency_and_success() {
        let query = words("Summarise the quarterly revenue report");
        let now = 30 * 24 * 3_600_000;
        let fresh = result(now, true, "quarterly revenue report for Q3");
        let old = result(0, true, "quarterly revenue report for Q1");
        let failed = result(now, false, "quarterly revenue report, failed");
        let unrelated = result(now, true, "weather in Lisbon");
        assert!(relevance(&query, &fresh, now) > relevance(&query, &old, now));
        assert!(relevance(&query, &fresh, now) > relevance(&query, &failed, now));
        assert_eq!(relevance(&query, &unrelated, now), 0.0);
        let ranked = most_relevant(&query, vec![old, unrelated, failed, fresh], now, 2);
        assert_eq!(ranked.len(), 2);
        assert!(ranked[0]
            .1
            .details
            .input_preview
            .as_deref()
            .unwrap()
            .contains("Q3"));
    }

    #[test]
    fn results_of_several_agents_merge_newest_first_within_the_limit() {
        let merged = newest_first(
            vec![
                vec![result(30, true, "a"), result(10, true, "b")],
                vec![result(20, true, "c")],
            ],
            2,
        );
        let times: Vec<i64> = merged.iter().map(|r| r.finished_at_ms).collect();
        assert_eq!(times, [30, 20]);
    }

    #[test]
    fn a_query_matches_by_window_type_and_outcome() {
        let query = ResultQuery {
            task_type: Some("summarize".into()),
            success: Some(false),
            since_ms: 5,
            until_ms: 50,
            limit: 10,
        };
        assert!(query.matches(&result(10, false, "x")));
        assert!(!query.matches(&result(10, true, "x")));
        assert!(!query.matches(&result(60, false, "x")));
    }
}
