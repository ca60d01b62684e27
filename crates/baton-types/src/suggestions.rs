//! A suggestion's life as Baton keeps it: open, then dismissed or applied by a person, and
//! once applied, its measured impact. Pure: the store keeps these records whole.
//!
//! **Nothing here applies a change.** `applied` only records that a person made the change
//! through the API. A rule and a subject have at most one open suggestion: a new analysis that
//! finds the same refreshes its figures, and its id is derived from them and from how many
//! came before ([`suggestion_id`]), so two analyses at once write one record, not two.

use serde::{Deserialize, Serialize};

use crate::improvements::{CallFact, Impact, Metric, Suggestion, SuggestionPriority};
use crate::outcome::FailureKind;
use crate::results::PastResult;

/// The most suggestions a tenant keeps; past it, the oldest closed ones are not listed.
pub const MAX_KEPT: usize = 500;
/// The longest window an analysis reads: the results' retention bounds it anyway.
pub const MAX_WINDOW_HOURS: f64 = 720.0;
/// The window an analysis reads when the request names none.
pub const DEFAULT_WINDOW_HOURS: f64 = 24.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SuggestionStatus {
    /// Found, not acted on.
    Open,
    /// A person decided against it.
    Dismissed,
    /// A person made the change and said so; its impact is measured.
    Applied,
}

impl SuggestionStatus {
    pub const NAMES: [&'static str; 3] = ["open", "dismissed", "applied"];

    pub fn parse(name: &str) -> Option<SuggestionStatus> {
        match name {
            "open" => Some(SuggestionStatus::Open),
            "dismissed" => Some(SuggestionStatus::Dismissed),
            "applied" => Some(SuggestionStatus::Applied),
            _ => None,
        }
    }
}

/// An impact as measured so far: `complete` once the after-window has run its full length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MeasuredImpact {
    #[serde(flatten)]
    pub impact: Impact,
    pub complete: bool,
    pub measured_at_ms: i64,
}

/// A suggestion as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSuggestion {
    pub id: String,
    /// Each write adds one; a write is conditioned on the version it read.
    pub version: u64,
    pub status: SuggestionStatus,
    #[serde(flatten)]
    pub suggestion: Suggestion,
    /// Who found it: `rules`, or the analysing agent's name.
    pub analyzer: String,
    /// The analysis window it was found in, which its impact is measured over.
    pub window_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dismissed_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<MeasuredImpact>,
}

/// Why a person's action on a suggestion is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("suggestion `{id}` is {status}; only an open one can be {wanted}")]
    NotOpen {
        id: String,
        status: &'static str,
        wanted: &'static str,
    },
}

impl StoredSuggestion {
    /// A suggestion just found.
    pub fn found(
        id: String,
        suggestion: Suggestion,
        analyzer: &str,
        window_ms: i64,
        now_ms: i64,
    ) -> Self {
        StoredSuggestion {
            id,
            version: 1,
            status: SuggestionStatus::Open,
            suggestion,
            analyzer: analyzer.to_string(),
            window_ms,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            applied_at_ms: None,
            dismissed_at_ms: None,
            impact: None,
        }
    }

    /// The same suggestion found again: its figures, title and change as they are now.
    pub fn refreshed(&self, suggestion: Suggestion, window_ms: i64, now_ms: i64) -> Self {
        StoredSuggestion {
            version: self.version + 1,
            suggestion,
            window_ms,
            updated_at_ms: now_ms,
            ..self.clone()
        }
    }

    /// Dismissed by a person; dismissing twice changes nothing.
    pub fn dismissed(&self, now_ms: i64) -> Result<Option<Self>, TransitionError> {
        match self.status {
            SuggestionStatus::Dismissed => Ok(None),
            SuggestionStatus::Open => Ok(Some(StoredSuggestion {
                version: self.version + 1,
                status: SuggestionStatus::Dismissed,
                dismissed_at_ms: Some(now_ms),
                updated_at_ms: now_ms,
                ..self.clone()
            })),
            SuggestionStatus::Applied => Err(self.not_open("dismissed")),
        }
    }

    /// Marked applied by the person who made the change; marking it twice changes nothing.
    pub fn applied(&self, now_ms: i64) -> Result<Option<Self>, TransitionError> {
        match self.status {
            SuggestionStatus::Applied => Ok(None),
            SuggestionStatus::Open => Ok(Some(StoredSuggestion {
                version: self.version + 1,
                status: SuggestionStatus::Applied,
                applied_at_ms: Some(now_ms),
                updated_at_ms: now_ms,
                ..self.clone()
            })),
            SuggestionStatus::Dismissed => Err(self.not_open("marked applied")),
        }
    }

    fn not_open(&self, wanted: &'static str) -> TransitionError {
        TransitionError::NotOpen {
            id: self.id.clone(),
            status: match self.status {
                SuggestionStatus::Open => "open",
                SuggestionStatus::Dismissed => "dismissed",
                SuggestionStatus::Applied => "applied",
            },
            wanted,
        }
    }

    /// The windows its impact is measured over, at `now_ms`: `before` the same length as the
    /// part of `after` that has passed, ending where it was applied. None unless applied and
    /// its impact is not complete yet.
    pub fn impact_windows(&self, now_ms: i64) -> Option<ImpactWindows> {
        let applied = self.applied_at_ms?;
        if self.impact.as_ref().is_some_and(|i| i.complete) {
            return None;
        }
        let after_end = now_ms.min(applied + self.window_ms);
        let length = after_end - applied;
        (length > 0).then_some(ImpactWindows {
            before: (applied - length, applied),
            after: (applied, after_end),
            complete: after_end == applied + self.window_ms,
        })
    }

    /// With `impact` measured at `now_ms` over `windows`.
    pub fn measured(&self, impact: Impact, windows: &ImpactWindows, now_ms: i64) -> Self {
        StoredSuggestion {
            version: self.version + 1,
            impact: Some(MeasuredImpact {
                impact,
                complete: windows.complete,
                measured_at_ms: now_ms,
            }),
            updated_at_ms: now_ms,
            ..self.clone()
        }
    }

    pub fn metric(&self) -> &Metric {
        &self.suggestion.metric
    }

    pub fn priority(&self) -> SuggestionPriority {
        self.suggestion.priority
    }
}

/// Two windows of equal length, as `[start, end)` in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpactWindows {
    pub before: (i64, i64),
    pub after: (i64, i64),
    /// The after-window has run its full length: this measure is the last.
    pub complete: bool,
}

/// The id of the `earlier`-th + 1 suggestion of `rule` about `subject`: the same for every
/// analysis that finds it, so concurrent analyses write one record.
pub fn suggestion_id(rule: &str, subject: &str, earlier: usize) -> String {
    let hash = format!("{rule}#{subject}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}-{}", earlier + 1)
}

/// A remembered call as the analysis reads it.
pub fn call_fact(result: &PastResult) -> CallFact {
    let details = &result.details;
    CallFact {
        agent: result.agent.to_string(),
        task_type: result.task_type.clone(),
        capability: details.capability.clone(),
        success: result.success,
        failure: result.failure.map(failure_name),
        latency_ms: result.latency_ms,
        queue_wait_ms: details.queue_wait_ms.unwrap_or(0),
        busy_waits: details.busy_waits,
        input_tokens: result.usage.map_or(0, |u| u.input_tokens),
        output_tokens: result.usage.map_or(0, |u| u.output_tokens),
        finished_at_ms: result.finished_at_ms,
        deadline_slack_ms: details.deadline_slack_ms,
        strategy: details
            .strategy
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
    }
}

/// A failure kind's name as written in JSON (`http_status`, `timeout`…).
fn failure_name(kind: FailureKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The calls of `calls` that finished within `[start, end)`.
pub fn within(calls: &[CallFact], (start, end): (i64, i64)) -> Vec<CallFact> {
    calls
        .iter()
        .filter(|c| (start..end).contains(&c.finished_at_ms))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::improvements::{ApiCall, Area};
    use serde_json::json;

    fn suggestion() -> Suggestion {
        Suggestion {
            rule: "raise_max_concurrency".into(),
            subject: "writer".into(),
            area: Area::Bottleneck,
            priority: SuggestionPriority::High,
            title: "Raise writer's max_concurrency".into(),
            evidence: json!({}),
            expected_impact: "Shorter waits.".into(),
            change: ApiCall {
                method: "PATCH".into(),
                path: "/v1/agents/writer".into(),
                headers: Default::default(),
                body: Some(json!({ "max_concurrency": 2 })),
            },
            metric: Metric::QueueWaitP50 {
                capability: "write".into(),
            },
        }
    }

    #[test]
    fn an_open_suggestion_is_dismissed_or_applied_once_and_never_both() {
        let open = StoredSuggestion::found("s-1".into(), suggestion(), "rules", 60_000, 1_000);
        let applied = open.applied(2_000).unwrap().unwrap();
        assert_eq!(
            (applied.status, applied.applied_at_ms),
            (SuggestionStatus::Applied, Some(2_000))
        );
        assert_eq!(
            applied.applied(3_000),
            Ok(None),
            "marking twice changes nothing"
        );
        assert!(applied.dismissed(3_000).is_err());
        let dismissed = open.dismissed(2_000).unwrap().unwrap();
        assert!(dismissed.applied(3_000).is_err());
        assert_eq!(dismissed.version, open.version + 1);
    }

    #[test]
    fn impact_windows_are_equal_and_grow_until_the_after_window_is_whole() {
        let open = StoredSuggestion::found("s-1".into(), suggestion(), "rules", 60_000, 0);
        assert_eq!(open.impact_windows(10_000), None, "not applied");
        let applied = open.applied(100_000).unwrap().unwrap();
        let early = applied.impact_windows(110_000).unwrap();
        assert_eq!(
            (early.before, early.after, early.complete),
            ((90_000, 100_000), (100_000, 110_000), false)
        );
        let late = applied.impact_windows(500_000).unwrap();
        assert_eq!(
            (late.before, late.after, late.complete),
            ((40_000, 100_000), (100_000, 160_000), true)
        );
        let impact = Impact {
            metric: applied.metric().clone(),
            before: 2.0,
            after: 1.0,
            change: -1.0,
            before_calls: 10,
            after_calls: 10,
        };
        let done = applied.measured(impact, &late, 500_000);
        assert_eq!(
            done.impact_windows(600_000),
            None,
            "a complete impact is final"
        );
    }

    #[test]
    fn the_same_rule_and_subject_get_the_same_id_and_the_next_one_a_new_one() {
        assert_eq!(suggestion_id("r", "s", 0), suggestion_id("r", "s", 0));
        assert_ne!(suggestion_id("r", "s", 0), suggestion_id("r", "s", 1));
        assert_ne!(suggestion_id("r", "s", 0), suggestion_id("r", "t", 0));
        assert!(suggestion_id("r", "s", 0)
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
