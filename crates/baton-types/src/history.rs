//! A workflow's history, derived from what its items already hold: the workflow record (its
//! creation, controls and end), each task's attempts, claims and release, and the attempts of
//! earlier drives that its redrives archived. Nothing is written for it: every attempt a task
//! made is on its item or, once a redrive ended its drive, in the workflow's archive.

use serde::Serialize;
use serde_json::{json, Value};

use crate::records::{ArchivedDrive, TaskRecord, WorkflowView};
use crate::task::{AttemptOutcome, AttemptRecord, TaskStatus};

/// One transition in a workflow's life.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEvent {
    pub at_ms: i64,
    /// `submitted`, `queued`, `released`, `routed`, `claimed`, `succeeded`, `failed`,
    /// `retry_scheduled`, `skipped`, `cancelled`, `paused`, `resumed`, `cancel_requested`,
    /// `redriven` or `finished`.
    pub event: &'static str,
    pub task: Option<String>,
    pub attempt: Option<u32>,
    pub agent: Option<String>,
    pub details: Option<Value>,
}

impl HistoryEvent {
    fn at(at_ms: i64, event: &'static str) -> Self {
        HistoryEvent {
            at_ms,
            event,
            task: None,
            attempt: None,
            agent: None,
            details: None,
        }
    }

    fn of(task: &TaskRecord, at_ms: i64, event: &'static str) -> Self {
        HistoryEvent {
            task: Some(task.id.to_string()),
            ..HistoryEvent::at(at_ms, event)
        }
    }

    fn attempt(mut self, attempt: u32, agent: Option<&str>) -> Self {
        self.attempt = Some(attempt);
        self.agent = agent.map(str::to_string);
        self
    }

    fn details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// Every transition of the workflow, oldest first (events of one instant in the order they
/// happen), with the attempts of the drives its redrives ended from `archive`.
pub fn history(view: &WorkflowView, archive: &[ArchivedDrive]) -> Vec<HistoryEvent> {
    let w = &view.workflow;
    let mut events = vec![HistoryEvent::at(w.created_at_ms, "submitted")
        .details(json!({ "name": w.name, "tasks": w.task_count }))];
    for task in &view.tasks {
        let mut drives: Vec<&ArchivedDrive> =
            archive.iter().filter(|d| d.task_id == task.id).collect();
        drives.sort_by_key(|d| d.drive);
        task_events(view, task, &drives, &mut events);
    }
    for control in &w.controls {
        let mut details = serde_json::Map::new();
        if control.force {
            details.insert("force".into(), json!(true));
        }
        if let Some(drive) = control.drive {
            details.insert("drive".into(), json!(drive));
        }
        let mut entry = HistoryEvent::at(control.at_ms, control.event.as_str());
        if !details.is_empty() {
            entry = entry.details(Value::Object(details));
        }
        events.push(entry);
    }
    if let Some(finished) = w.finished_at_ms.filter(|_| w.status.is_terminal()) {
        let mut details = json!({ "status": w.status });
        if let Some(failed) = &w.failed_task {
            details["failed_task"] = json!(failed);
        }
        if let Some(error) = &w.error {
            details["error"] = json!(error);
        }
        events.push(HistoryEvent::at(finished, "finished").details(details));
    }
    // Stable: events of one instant keep the order they were pushed in.
    events.sort_by_key(|e| e.at_ms);
    events
}

/// A task's events; `drives`: its archived drives, oldest first.
fn task_events(
    view: &WorkflowView,
    task: &TaskRecord,
    drives: &[&ArchivedDrive],
    events: &mut Vec<HistoryEvent>,
) {
    let created = view.workflow.created_at_ms;
    if task.depends_on.is_empty() {
        events.push(HistoryEvent::of(task, created, "queued"));
    } else if let Some(released_at) = released_at(view, task) {
        let by = task
            .deps_done
            .iter()
            .filter_map(|d| view.tasks.iter().find(|t| &t.id == d))
            .max_by_key(|t| t.finished_at_ms)
            .map(|t| t.id.clone());
        events.push(HistoryEvent::of(task, released_at, "released").details(json!({ "by": by })));
    }
    for drive in drives {
        attempt_events(task, &drive.attempts, events);
    }
    attempt_events(task, &task.attempts, events);
    // The current attempt's routing decision, shown at its claim (the decision is kept with
    // the claim; the time routing made it is not stored).
    let current_ended = task.attempts.iter().any(|a| a.attempt == task.attempt);
    if let (Some(decision), Some(started)) = (&task.decision, task.started_at_ms) {
        let routed = HistoryEvent::of(task, started, "routed")
            .attempt(task.attempt, Some(decision.primary.as_str()))
            .details(json!({
                "strategy": decision.strategy,
                "confidence": decision.confidence,
                "fallbacks": decision.fallbacks,
                "reasoning": decision.reasoning,
            }));
        // Before the attempt's claim: the claim is already in the list when the attempt ended.
        let claim = events.iter().position(|e| {
            e.task.as_deref() == Some(&task.id)
                && e.event == "claimed"
                && e.attempt == Some(task.attempt)
        });
        match claim {
            Some(i) => events.insert(i, routed),
            None => events.push(routed),
        }
    }
    // A claim whose attempt has not ended (running, cut off by a cancel, or given back by a
    // lease that ran out).
    if !current_ended {
        if let Some(started) = task.started_at_ms {
            events.push(
                HistoryEvent::of(task, started, "claimed")
                    .attempt(task.attempt, task.agent.as_deref())
                    .details(json!({ "claims": task.claims })),
            );
        }
    }
    if let Some(finished) = task.finished_at_ms {
        match task.status {
            TaskStatus::Skipped => events.push(HistoryEvent::of(task, finished, "skipped")),
            TaskStatus::Cancelled => events.push(
                HistoryEvent::of(task, finished, "cancelled")
                    .details(json!({ "reason": task.failure.as_ref().map(|f| &f.message) })),
            ),
            _ => {}
        }
    }
}

/// A claim and an end for each ended attempt, and the retry each scheduled.
fn attempt_events(task: &TaskRecord, attempts: &[AttemptRecord], events: &mut Vec<HistoryEvent>) {
    for a in attempts {
        let start = a.started_at_ms.unwrap_or(a.finished_at_ms);
        if a.agent.is_some() {
            events.push(
                HistoryEvent::of(task, start, "claimed")
                    .attempt(a.attempt, a.agent.as_deref())
                    .details(json!({ "claims": a.claims })),
            );
        }
        let (event, details) = match a.outcome {
            AttemptOutcome::Succeeded => ("succeeded", json!({ "call_ms": a.call_ms })),
            AttemptOutcome::Failed => ("failed", json!({ "error": a.error, "call_ms": a.call_ms })),
        };
        events.push(
            HistoryEvent::of(task, a.finished_at_ms, event)
                .attempt(a.attempt, a.agent.as_deref())
                .details(details),
        );
        if let Some(delay_ms) = a.retry_delay_ms {
            events.push(
                HistoryEvent::of(task, a.finished_at_ms, "retry_scheduled")
                    .attempt(a.attempt + 1, None)
                    .details(json!({
                        "delay_ms": delay_ms,
                        "due_at_ms": a.finished_at_ms + delay_ms as i64,
                    })),
            );
        }
    }
}

/// When a dependent was released: when the last of its counted dependencies finished.
fn released_at(view: &WorkflowView, task: &TaskRecord) -> Option<i64> {
    if task.deps_remaining > 0 || task.status == TaskStatus::Skipped {
        return None;
    }
    task.deps_done
        .iter()
        .filter_map(|d| view.tasks.iter().find(|t| &t.id == d))
        .filter_map(|t| t.finished_at_ms)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlEvent;
    use crate::outcome::{FailureKind, TaskFailure};
    use crate::records::fixtures::{task, view};
    use crate::task::AttemptRecord;

    fn attempt(
        n: u32,
        outcome: AttemptOutcome,
        at: (i64, i64),
        retry: Option<u64>,
    ) -> AttemptRecord {
        AttemptRecord {
            attempt: n,
            agent: Some("agent-1".parse().unwrap()),
            started_at_ms: Some(at.0),
            finished_at_ms: at.1,
            outcome,
            error: (outcome == AttemptOutcome::Failed)
                .then(|| TaskFailure::new(FailureKind::Timeout, "slow")),
            claims: 1,
            retry_delay_ms: retry,
            call_ms: Some(5),
            usage: None,
            late: false,
        }
    }

    #[test]
    fn the_history_orders_every_transition_from_submission_to_the_end() {
        let mut a = task("a", &[], TaskStatus::Succeeded, Some((5, 40)));
        a.attempts = vec![
            attempt(1, AttemptOutcome::Failed, (5, 10), Some(20)),
            attempt(2, AttemptOutcome::Succeeded, (30, 40), None),
        ];
        a.attempt = 2;
        let mut b = task("b", &["a"], TaskStatus::Succeeded, Some((45, 60)));
        b.attempts = vec![attempt(1, AttemptOutcome::Succeeded, (45, 60), None)];
        let mut v = view(vec![a, b]);
        v.workflow.finished_at_ms = Some(61);
        v.workflow.controls = vec![ControlEvent {
            event: crate::control::ControlKind::Paused,
            at_ms: 35,
            force: false,
            drive: None,
            request: "r".into(),
        }];
        let events: Vec<(i64, &str, Option<&str>)> = history(&v, &[])
            .iter()
            .map(|e| (e.at_ms, e.event, e.task.as_deref()))
            .map(|(at, ev, t)| (at, ev, t.map(|t| if t == "a" { "a" } else { "b" })))
            .collect();
        assert_eq!(
            events,
            [
                (0, "submitted", None),
                (0, "queued", Some("a")),
                (5, "claimed", Some("a")),
                (10, "failed", Some("a")),
                (10, "retry_scheduled", Some("a")),
                (30, "claimed", Some("a")),
                (35, "paused", None),
                (40, "succeeded", Some("a")),
                (40, "released", Some("b")),
                (45, "claimed", Some("b")),
                (60, "succeeded", Some("b")),
                (61, "finished", None),
            ]
        );
    }

    #[test]
    fn archived_drives_come_before_the_current_one_in_time_order() {
        let mut a = task("a", &[], TaskStatus::Succeeded, Some((50, 60)));
        a.attempt = 3;
        a.drive = 2;
        a.attempts = vec![attempt(3, AttemptOutcome::Succeeded, (50, 60), None)];
        let archive = [
            ArchivedDrive {
                task_id: "a".parse().unwrap(),
                drive: 1,
                attempts: vec![attempt(2, AttemptOutcome::Failed, (30, 40), None)],
            },
            ArchivedDrive {
                task_id: "a".parse().unwrap(),
                drive: 0,
                attempts: vec![attempt(1, AttemptOutcome::Failed, (10, 20), None)],
            },
        ];
        let ends: Vec<(i64, &str, Option<u32>)> = history(&view(vec![a]), &archive)
            .iter()
            .filter(|e| e.event != "claimed")
            .map(|e| (e.at_ms, e.event, e.attempt))
            .collect();
        assert_eq!(
            ends,
            [
                (0, "submitted", None),
                (0, "queued", None),
                (20, "failed", Some(1)),
                (40, "failed", Some(2)),
                (60, "succeeded", Some(3)),
                (100, "finished", None),
            ]
        );
    }
}
