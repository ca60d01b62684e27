//! A workflow's stream: its tasks' milestones (ready, started, retried, ended) and its own
//! `end`, as numbered events a UI reads instead of polling. Pure: the milestones are derived
//! from the task records, which already hold every attempt, so the chain writes nothing for
//! them. Whoever watches the workflow appends the milestones not yet in its log, each once
//! (its [`key`]), so every reader sees the same numbers in the same order.

use std::collections::HashSet;

use crate::records::{TaskRecord, WorkflowView};
use crate::results;
use crate::stream::{EventKind, StreamEvent};
use crate::task::{AttemptOutcome, TaskStatus};

/// What makes a milestone one event: its type, task, drive and attempt. A log's events give
/// their keys back, so a watcher that comes later appends only what is missing.
pub fn key(event: &StreamEvent) -> Option<String> {
    Some(match &event.kind {
        EventKind::Ready { task, drive } => format!("ready:{task}:{drive}"),
        EventKind::Started { task, drive, .. } => {
            format!("started:{task}:{drive}:{}", event.attempt)
        }
        EventKind::Retried { task, drive, .. } => {
            format!("retried:{task}:{drive}:{}", event.attempt)
        }
        EventKind::Ended { task, drive, .. } => format!("ended:{task}:{drive}"),
        EventKind::End { .. } => format!("end:{}", event.attempt),
        _ => return None,
    })
}

/// The workflow's milestones not yet among `logged` (keys), in the order they happened as
/// far as the records tell, numbered on from `last_seq`: each task's own in order, then the
/// workflow's `end` once it and all its tasks are final. `now_ms` times what the records do
/// not (a task made ready).
pub fn unlogged(
    view: &WorkflowView,
    logged: &HashSet<String>,
    last_seq: u64,
    now_ms: i64,
) -> Vec<StreamEvent> {
    let mut found: Vec<(i64, usize, StreamEvent)> = Vec::new();
    for (position, task) in view.tasks.iter().enumerate() {
        // A task's events keep their order even where the clocks that timed them disagree.
        let mut floor = i64::MIN;
        for mut event in task_milestones(task, now_ms) {
            floor = floor.max(event.at_ms);
            event.at_ms = floor;
            found.push((floor, position, event));
        }
    }
    // Stable: equal times keep task order, then each task's own order.
    found.sort_by_key(|(at, position, _)| (*at, *position));
    let workflow = &view.workflow;
    let all_final = view.tasks.iter().all(|t| t.status.is_terminal());
    let mut events: Vec<StreamEvent> = found.into_iter().map(|(_, _, e)| e).collect();
    if workflow.status.is_terminal() && all_final {
        events.push(StreamEvent {
            seq: 0,
            at_ms: workflow.finished_at_ms.unwrap_or(now_ms),
            attempt: workflow.drive,
            kind: EventKind::End {
                status: workflow.status.to_string(),
                output_preview: None,
            },
        });
    }
    let mut seq = last_seq;
    events
        .into_iter()
        .filter(|e| key(e).is_some_and(|k| !logged.contains(&k)))
        .map(|mut e| {
            seq += 1;
            e.seq = seq;
            e
        })
        .collect()
}

/// Whether `event` closes a workflow's stream (its drive's `end`).
pub fn is_end(event: &StreamEvent) -> bool {
    matches!(event.kind, EventKind::End { .. })
}

/// One task's milestones as its record shows them, in order (numbered 0).
fn task_milestones(task: &TaskRecord, now_ms: i64) -> Vec<StreamEvent> {
    let name = task.id.to_string();
    let drive = task.drive;
    let event = |at_ms: i64, attempt: u32, kind: EventKind| StreamEvent {
        seq: 0,
        at_ms,
        attempt,
        kind,
    };
    let mut events = Vec::new();
    let began = !task.attempts.is_empty()
        || matches!(task.status, TaskStatus::Queued | TaskStatus::Running)
        || matches!(task.status, TaskStatus::Succeeded | TaskStatus::Failed);
    if !began {
        // Waiting, or skipped or cancelled before it could run: never ready.
        return final_only(task, now_ms, &name);
    }
    let first_start = task
        .attempts
        .iter()
        .find_map(|a| a.started_at_ms)
        .or(task.started_at_ms)
        .unwrap_or(now_ms);
    events.push(event(
        first_start,
        1,
        EventKind::Ready {
            task: name.clone(),
            drive,
        },
    ));
    for ended in &task.attempts {
        if let Some(started) = ended.started_at_ms {
            events.push(event(
                started,
                ended.attempt,
                EventKind::Started {
                    task: name.clone(),
                    agent: ended.agent.as_ref().map(|a| a.to_string()),
                    drive,
                },
            ));
        }
        if ended.attempt < task.attempt && ended.outcome == AttemptOutcome::Failed {
            events.push(event(
                ended.finished_at_ms,
                ended.attempt,
                EventKind::Retried {
                    task: name.clone(),
                    error: ended.error.as_ref().map(|f| f.message.clone()),
                    drive,
                },
            ));
        }
    }
    let current_recorded = task.attempts.iter().any(|a| a.attempt == task.attempt);
    if !current_recorded {
        if let Some(started) = task.started_at_ms {
            events.push(event(
                started,
                task.attempt,
                EventKind::Started {
                    task: name.clone(),
                    agent: task.agent.as_ref().map(|a| a.to_string()),
                    drive,
                },
            ));
        }
    }
    events.extend(final_only(task, now_ms, &name));
    events
}

/// The task's `ended`, when it is final.
fn final_only(task: &TaskRecord, now_ms: i64, name: &str) -> Vec<StreamEvent> {
    if !task.status.is_terminal() {
        return Vec::new();
    }
    let output_preview = match (&task.output, &task.output_preview) {
        (Some(output), _) => Some(results::preview(output)),
        (None, preview) => preview.clone(),
    };
    vec![StreamEvent {
        seq: 0,
        at_ms: task.finished_at_ms.unwrap_or(now_ms),
        attempt: task.attempt,
        kind: EventKind::Ended {
            task: name.to_string(),
            status: task.status.to_string(),
            output_preview,
            error: task.failure.as_ref().map(|f| f.message.clone()),
            drive: task.drive,
        },
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::fixtures::{task, view};
    use crate::task::AttemptRecord;
    use crate::task::WorkflowStatus;

    fn failed_attempt(attempt: u32, started: i64, finished: i64) -> AttemptRecord {
        serde_json::from_value(serde_json::json!({
            "attempt": attempt, "agent": "agent-1", "started_at_ms": started,
            "finished_at_ms": finished, "outcome": "failed",
            "error": {"kind": "http_status", "message": "boom", "retryable": true},
        }))
        .unwrap()
    }

    fn names(events: &[StreamEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| format!("{}:{}", e.seq, key(e).unwrap()))
            .collect()
    }

    #[test]
    fn a_retried_task_shows_each_attempt_in_order_and_then_the_workflow_end() {
        let mut retried = task("a", &[], TaskStatus::Succeeded, Some((300, 400)));
        retried.attempt = 2;
        retried.attempts = vec![failed_attempt(1, 100, 200), {
            let mut ok = failed_attempt(2, 300, 400);
            ok.outcome = AttemptOutcome::Succeeded;
            ok.error = None;
            ok
        }];
        retried.output = Some(serde_json::json!({"answer": 42}));
        let waiting = task("b", &["a"], TaskStatus::Waiting, None);
        let mut workflow = view(vec![retried, waiting]);
        let first = unlogged(&workflow, &HashSet::new(), 0, 1_000);
        assert_eq!(
            names(&first),
            [
                "1:ready:a:0",
                "2:started:a:0:1",
                "3:retried:a:0:1",
                "4:started:a:0:2",
                "5:ended:a:0"
            ]
        );
        let EventKind::Ended { output_preview, .. } = &first[4].kind else {
            panic!("not ended: {:?}", first[4]);
        };
        assert_eq!(output_preview.as_deref(), Some(r#"{"answer":42}"#));

        // b runs and the workflow ends: only what is new follows, numbered on.
        let logged: HashSet<String> = first.iter().filter_map(key).collect();
        workflow.tasks[1] = task("b", &["a"], TaskStatus::Succeeded, Some((500, 600)));
        workflow.workflow.status = WorkflowStatus::Succeeded;
        let next = unlogged(&workflow, &logged, 5, 2_000);
        assert_eq!(
            names(&next),
            ["6:ready:b:0", "7:started:b:0:1", "8:ended:b:0", "9:end:0"]
        );
        let all: HashSet<String> = logged
            .into_iter()
            .chain(next.iter().filter_map(key))
            .collect();
        assert!(unlogged(&workflow, &all, 9, 3_000).is_empty());
    }

    #[test]
    fn a_task_skipped_before_it_could_run_only_ends_and_the_workflow_with_it() {
        let skipped = task("s", &["x"], TaskStatus::Skipped, None);
        let events = unlogged(&view(vec![skipped]), &HashSet::new(), 0, 10);
        assert_eq!(names(&events), ["1:ended:s:0", "2:end:0"]);
    }
}
