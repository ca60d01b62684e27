//! Patterns: what Baton has learned about a task type, as live figures per agent and as
//! patterns that hold for a while. Pure.
//!
//! A pattern is a statement with a subject that is true from one time to another: this agent
//! is the one routing prefers, this failure recurs. The analysis compares what holds now with
//! the open patterns: one that stopped holding is **closed** with the time it stopped
//! (`valid_to`), never overwritten or deleted, and one newly true opens. So the history of a
//! task type reads as intervals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::results::PastResult;

/// The most failure patterns a task type shows, the most frequent first.
pub const MAX_FAILURE_PATTERNS: usize = 10;
/// Failures of one kind and message that make a recurring failure within a window.
pub const RECURRING_FAILURES: usize = 3;
/// The most patterns a task type's history lists.
pub const MAX_HISTORY: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PatternKind {
    /// The agent routing would choose for the task type.
    PreferredAgent,
    /// A failure (kind and normalised message) that recurs.
    RecurringFailure,
}

impl PatternKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PatternKind::PreferredAgent => "preferred_agent",
            PatternKind::RecurringFailure => "recurring_failure",
        }
    }
}

/// A pattern as kept: open while `valid_to` is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pattern {
    pub kind: PatternKind,
    pub subject: String,
    pub valid_from_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to_ms: Option<i64>,
    /// The figures it was found with.
    pub evidence: Value,
}

/// A pattern that holds now, as the analysis finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    pub kind: PatternKind,
    pub subject: String,
    pub evidence: Value,
}

/// What to write so the kept patterns say what holds at `now_ms`: the open ones that stopped
/// holding, closed, and the newly holding ones, opened.
pub fn reconcile(
    kept: &[Pattern],
    holding: &[Holding],
    now_ms: i64,
) -> (Vec<Pattern>, Vec<Pattern>) {
    let open: Vec<&Pattern> = kept.iter().filter(|p| p.valid_to_ms.is_none()).collect();
    let holds = |p: &Pattern| {
        holding
            .iter()
            .any(|h| h.kind == p.kind && h.subject == p.subject)
    };
    let closed = open
        .iter()
        .filter(|p| !holds(p))
        .map(|p| Pattern {
            valid_to_ms: Some(now_ms),
            ..(*p).clone()
        })
        .collect();
    let opened = holding
        .iter()
        .filter(|h| {
            !open
                .iter()
                .any(|p| p.kind == h.kind && p.subject == h.subject)
        })
        .map(|h| Pattern {
            kind: h.kind,
            subject: h.subject.clone(),
            valid_from_ms: now_ms,
            valid_to_ms: None,
            evidence: h.evidence.clone(),
        })
        .collect();
    (closed, opened)
}

/// Calls of an agent on a task type within the window before it can be the preferred one.
pub const PREFERRED_MIN_CALLS: usize = 5;

/// The patterns that hold among one task type's results of a window: the agent that did best
/// (highest success rate, then lowest p50 latency, with at least [`PREFERRED_MIN_CALLS`]
/// calls), and each failure seen at least [`RECURRING_FAILURES`] times.
pub fn holding(results: &[PastResult]) -> Vec<Holding> {
    let mut by_agent: BTreeMap<&str, Vec<&PastResult>> = BTreeMap::new();
    for r in results {
        by_agent.entry(r.agent.as_str()).or_default().push(r);
    }
    let best = by_agent
        .iter()
        .filter(|(_, calls)| calls.len() >= PREFERRED_MIN_CALLS)
        .map(|(agent, calls)| {
            let rate = calls.iter().filter(|r| r.success).count() as f64 / calls.len() as f64;
            let mut latencies: Vec<u64> = calls.iter().map(|r| r.latency_ms).collect();
            let p50 = percentile(&mut latencies, 50.0).unwrap_or(0);
            (*agent, rate, p50, calls.len())
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.cmp(&a.2)).then(b.0.cmp(a.0)));
    let preferred = best.map(|(agent, rate, p50, calls)| Holding {
        kind: PatternKind::PreferredAgent,
        subject: agent.to_string(),
        evidence: serde_json::json!({ "success_rate": round(rate), "latency_p50_ms": p50, "calls": calls }),
    });
    let failures = failure_patterns(results)
        .into_iter()
        .filter(|f| f.count >= RECURRING_FAILURES)
        .map(|f| Holding {
            kind: PatternKind::RecurringFailure,
            subject: format!("{}: {}", f.kind, f.message),
            evidence: serde_json::json!({
                "count": f.count,
                "first_seen_ms": f.first_seen_ms,
                "last_seen_ms": f.last_seen_ms,
                "agents": f.agents,
            }),
        });
    preferred.into_iter().chain(failures).collect()
}

/// One failure that recurs among a task type's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailurePattern {
    /// The failure kind, as its JSON name.
    pub kind: String,
    /// The failure's message, normalised (numbers as `#`).
    pub message: String,
    pub count: usize,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The agents it happened on, by name.
    pub agents: Vec<String>,
}

/// The failures among `results` grouped by kind and normalised message, the most frequent
/// first, at most [`MAX_FAILURE_PATTERNS`].
pub fn failure_patterns(results: &[PastResult]) -> Vec<FailurePattern> {
    let mut groups: BTreeMap<(String, String), FailurePattern> = BTreeMap::new();
    for r in results.iter().filter(|r| !r.success) {
        let kind = r
            .failure
            .and_then(|k| serde_json::to_value(k).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let message = r.details.failure_message.clone().unwrap_or_default();
        let group = groups
            .entry((kind.clone(), message.clone()))
            .or_insert_with(|| FailurePattern {
                kind,
                message,
                count: 0,
                first_seen_ms: r.finished_at_ms,
                last_seen_ms: r.finished_at_ms,
                agents: Vec::new(),
            });
        group.count += 1;
        group.first_seen_ms = group.first_seen_ms.min(r.finished_at_ms);
        group.last_seen_ms = group.last_seen_ms.max(r.finished_at_ms);
        if !group.agents.iter().any(|a| *a == *r.agent) {
            group.agents.push(r.agent.to_string());
        }
    }
    let mut patterns: Vec<FailurePattern> = groups.into_values().collect();
    patterns.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(b.last_seen_ms.cmp(&a.last_seen_ms))
    });
    patterns.truncate(MAX_FAILURE_PATTERNS);
    patterns
}

/// Which way an agent's success rate moves: its newer results against its older ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trend {
    /// `improving`, `declining` or `steady` (within 10 points).
    pub direction: &'static str,
    pub earlier_success_rate: f64,
    pub recent_success_rate: f64,
}

/// The trend of results given newest first; None with fewer than 4.
pub fn trend(newest_first: &[PastResult]) -> Option<Trend> {
    if newest_first.len() < 4 {
        return None;
    }
    let half = newest_first.len() / 2;
    let rate = |results: &[PastResult]| {
        results.iter().filter(|r| r.success).count() as f64 / results.len() as f64
    };
    let (recent, earlier) = (rate(&newest_first[..half]), rate(&newest_first[half..]));
    let direction = if recent - earlier > 0.1 {
        "improving"
    } else if earlier - recent > 0.1 {
        "declining"
    } else {
        "steady"
    };
    Some(Trend {
        direction,
        earlier_success_rate: round(earlier),
        recent_success_rate: round(recent),
    })
}

/// The `p`-th percentile (0 to 100) of `values`, nearest rank; None when empty.
pub fn percentile(values: &mut [u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * values.len() as f64).ceil().max(1.0) as usize;
    Some(values[rank.min(values.len()) - 1])
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::FailureKind;
    use crate::results::CallDetails;
    use serde_json::json;

    fn result(at: i64, success: bool, message: &str) -> PastResult {
        PastResult {
            workflow_id: "w".parse().unwrap(),
            task_id: format!("t{at}").parse().unwrap(),
            attempt: 1,
            agent: "a".parse().unwrap(),
            task_type: "sum".into(),
            success,
            failure: (!success).then_some(FailureKind::HttpStatus),
            latency_ms: at as u64,
            usage: None,
            finished_at_ms: at,
            details: CallDetails {
                failure_message: (!success).then(|| message.to_string()),
                ..CallDetails::default()
            },
        }
    }

    #[test]
    fn a_pattern_that_stops_holding_is_closed_not_overwritten() {
        let holding = |subject: &str| Holding {
            kind: PatternKind::PreferredAgent,
            subject: subject.into(),
            evidence: json!({}),
        };
        let (closed, opened) = reconcile(&[], &[holding("a")], 10);
        assert!(closed.is_empty());
        assert_eq!((opened[0].valid_from_ms, opened[0].valid_to_ms), (10, None));
        let kept = opened;
        let (closed, opened) = reconcile(&kept, &[holding("a")], 20);
        assert!(
            closed.is_empty() && opened.is_empty(),
            "still holding: nothing to write"
        );
        let (closed, opened) = reconcile(&kept, &[holding("b")], 30);
        assert_eq!(
            (
                closed[0].subject.as_str(),
                closed[0].valid_from_ms,
                closed[0].valid_to_ms
            ),
            ("a", 10, Some(30))
        );
        assert_eq!(
            (opened[0].subject.as_str(), opened[0].valid_from_ms),
            ("b", 30)
        );
        // A closed pattern stays closed; the same subject holding again opens a new interval.
        let history = vec![closed[0].clone(), opened[0].clone()];
        let (_, reopened) = reconcile(&history, &[holding("a"), holding("b")], 40);
        assert_eq!((reopened.len(), reopened[0].valid_from_ms), (1, 40));
    }

    #[test]
    fn failures_group_by_kind_and_message_most_frequent_first() {
        let results = vec![
            result(1, false, "upstream # down"),
            result(2, true, ""),
            result(3, false, "upstream # down"),
            result(4, false, "bad input"),
        ];
        let patterns = failure_patterns(&results);
        assert_eq!(patterns.len(), 2);
        assert_eq!(
            (patterns[0].message.as_str(), patterns[0].count),
            ("upstream # down", 2)
        );
        assert_eq!(
            (patterns[0].first_seen_ms, patterns[0].last_seen_ms),
            (1, 3)
        );
        assert_eq!(patterns[0].kind, "http_status");
    }

    #[test]
    fn a_trend_compares_newer_results_with_older_ones() {
        let newest_first = vec![
            result(4, true, ""),
            result(3, true, ""),
            result(2, false, "x"),
            result(1, false, "x"),
        ];
        assert_eq!(trend(&newest_first).unwrap().direction, "improving");
        assert!(trend(&newest_first[..3]).is_none());
        assert_eq!(percentile(&mut [5, 1, 3, 2, 4], 50.0), Some(3));
        assert_eq!(percentile(&mut [5, 1, 3, 2, 4], 90.0), Some(5));
    }
}
