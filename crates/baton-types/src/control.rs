//! Workflow controls: cancel, pause, resume and redrive, decided from the workflow's record
//! alone, and the plan of a redrive, decided from its tasks.
//!
//! A control is applied in two steps. The workflow record takes it first, with a conditional
//! write (so two cancels are one cancel, and a resume of a running workflow is refused); then
//! its tasks are brought in line (see `baton_chain::hold`). The execute path never reads the
//! workflow: each task carries what it must honour (`hold`), so a claim, a release or a retry
//! that comes after a pause or cancel meets it on the task's own item.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

use super::dag::{Dag, TaskSpec};
use super::ids::TaskId;
use super::task::{TaskStatus, WorkflowStatus};

/// A control that holds on a running workflow until it finishes or is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Nothing new starts; running tasks finish and keep their results.
    Paused,
    /// Tasks not started are cancelled; the workflow ends `cancelled` once the running ones
    /// end (at once with `force`, whose running tasks are cancelled too).
    Cancelling { force: bool },
}

impl Control {
    pub const PAUSED: &'static str = "paused";
    pub const CANCELLING: &'static str = "cancelling";

    pub const fn as_str(self) -> &'static str {
        match self {
            Control::Paused => Control::PAUSED,
            Control::Cancelling { .. } => Control::CANCELLING,
        }
    }

    pub fn parse(name: &str, force: bool) -> Option<Control> {
        match name {
            Control::PAUSED => Some(Control::Paused),
            Control::CANCELLING => Some(Control::Cancelling { force }),
            _ => None,
        }
    }

    /// What the workflow's unfinished tasks carry while this control holds.
    pub const fn hold(self) -> Hold {
        match self {
            Control::Paused => Hold::Pause,
            Control::Cancelling { .. } => Hold::Cancel,
        }
    }
}

/// What a task carries while its workflow is paused or being cancelled: a claim refuses a
/// held task, and an ended attempt of it queues no retry that could run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    Pause,
    Cancel,
}

impl Hold {
    pub const fn as_str(self) -> &'static str {
        match self {
            Hold::Pause => "pause",
            Hold::Cancel => "cancel",
        }
    }

    pub fn parse(name: &str) -> Option<Hold> {
        match name {
            "pause" => Some(Hold::Pause),
            "cancel" => Some(Hold::Cancel),
            _ => None,
        }
    }
}

/// What a client asks of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    Cancel {
        force: bool,
    },
    Pause,
    Resume,
    /// Run the failed, cancelled and skipped tasks again, each as a new attempt.
    Redrive,
}

impl ControlAction {
    pub const fn name(self) -> &'static str {
        match self {
            ControlAction::Cancel { .. } => "cancel",
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Redrive => "retry",
        }
    }
}

/// What a control did, as the history names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    Paused,
    Resumed,
    CancelRequested,
    Redriven,
}

impl ControlKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ControlKind::Paused => "paused",
            ControlKind::Resumed => "resumed",
            ControlKind::CancelRequested => "cancel_requested",
            ControlKind::Redriven => "redriven",
        }
    }
}

/// The control events a workflow record keeps, newest last. Each pause and resume adds one,
/// so a client that pauses and resumes in a loop would otherwise grow the record without bound
/// (and with it the cost of every write on it, which DynamoDB charges by the item's size):
/// older events are dropped, and counted, by the write that appends a new one.
pub const MAX_CONTROL_EVENTS: usize = 20;

/// How many of the oldest of `kept` stored events the next appended one pushes out.
pub const fn controls_to_drop(kept: usize) -> usize {
    (kept + 1).saturating_sub(MAX_CONTROL_EVENTS)
}

/// A control as the workflow record keeps it (`controls`), for the history. It is appended
/// by the write that applies the control, so the history costs no write of its own; the
/// record keeps the newest [`MAX_CONTROL_EVENTS`] and counts the older ones
/// (`controls_dropped`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEvent {
    pub event: ControlKind,
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// The drive a redrive started (1 for the first redrive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive: Option<u32>,
    /// The request that wrote it: a retried write recognises itself by it.
    pub request: String,
}

/// How the workflow record changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlChange {
    /// It already is as asked (a second cancel, a second pause): nothing is written.
    Unchanged,
    Pause,
    Resume,
    Cancel {
        force: bool,
    },
    /// The workflow runs again as drive `drive`.
    Redrive {
        drive: u32,
    },
}

impl ControlChange {
    /// The history event the change records.
    pub const fn event(self) -> Option<ControlKind> {
        match self {
            ControlChange::Unchanged => None,
            ControlChange::Pause => Some(ControlKind::Paused),
            ControlChange::Resume => Some(ControlKind::Resumed),
            ControlChange::Cancel { .. } => Some(ControlKind::CancelRequested),
            ControlChange::Redrive { .. } => Some(ControlKind::Redriven),
        }
    }
}

/// The state of a workflow a control is decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlState {
    pub status: WorkflowStatus,
    pub control: Option<Control>,
    pub tasks_remaining: u32,
    /// Redrives so far.
    pub drive: u32,
}

impl ControlState {
    /// The status a person sees: a running workflow shows its control.
    pub fn shown_status(&self) -> &'static str {
        match (self.status, self.control) {
            (WorkflowStatus::Running, Some(control)) => control.as_str(),
            (status, _) => status.as_str(),
        }
    }
}

/// Why a control cannot be applied now; the API answers 409 with the current status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: &'static str,
    pub reason: String,
}

/// Decides what `action` does to a workflow in `state`.
pub fn decide(state: &ControlState, action: ControlAction) -> Result<ControlChange, Refusal> {
    let refuse = |reason: String| {
        Err(Refusal {
            status: state.shown_status(),
            reason,
        })
    };
    let shown = state.shown_status();
    let finishing = state.status == WorkflowStatus::Running && state.tasks_remaining == 0;
    match action {
        ControlAction::Redrive => match state.status {
            WorkflowStatus::Failed | WorkflowStatus::Cancelled => Ok(ControlChange::Redrive {
                drive: state.drive + 1,
            }),
            WorkflowStatus::Succeeded => {
                refuse("the workflow succeeded: no task is left to run again".into())
            }
            WorkflowStatus::Running => refuse(format!(
                "the workflow is {shown}: only a failed or cancelled workflow can be retried"
            )),
        },
        _ if state.status.is_terminal() => refuse(format!(
            "the workflow already finished ({shown}); `retry` runs a failed or cancelled one again"
        )),
        _ if finishing => refuse("every task has ended: the workflow is finishing".into()),
        ControlAction::Cancel { force } => match state.control {
            Some(Control::Cancelling { force: already }) if already || !force => {
                Ok(ControlChange::Unchanged)
            }
            _ => Ok(ControlChange::Cancel { force }),
        },
        ControlAction::Pause => match state.control {
            None => Ok(ControlChange::Pause),
            Some(Control::Paused) => Ok(ControlChange::Unchanged),
            Some(Control::Cancelling { .. }) => {
                refuse("the workflow is being cancelled: it cannot be paused".into())
            }
        },
        ControlAction::Resume => match state.control {
            Some(Control::Paused) => Ok(ControlChange::Resume),
            _ => refuse(format!(
                "the workflow is {shown}: only a paused workflow can be resumed"
            )),
        },
    }
}

/// A task as a redrive needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveTask<'a> {
    pub id: &'a TaskId,
    pub status: TaskStatus,
    pub depends_on: &'a [TaskId],
    pub attempt: u32,
    /// Whether any attempt of it was ever claimed or ended (then the next is a new attempt).
    pub ran: bool,
    /// The drive it was last reset for.
    pub drive: u32,
}

/// How one task starts again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReset {
    pub id: TaskId,
    /// The status it was read in (the reset's write is conditional on it).
    pub from: TaskStatus,
    pub from_attempt: u32,
    /// `Queued` when every dependency succeeded, else `Waiting`.
    pub status: TaskStatus,
    pub attempt: u32,
    /// Attempts before this drive: the retry policy counts from `attempt - prior_attempts`.
    pub prior_attempts: u32,
    /// Its dependencies that succeeded: already done for this drive.
    pub deps_done: Vec<TaskId>,
    pub deps_remaining: u32,
}

/// The tasks of drive `drive` to start again (failed, cancelled and skipped ones not reset for
/// it yet), dependents before their dependencies: a dependency that runs and succeeds can only
/// release a dependent that is already waiting again.
pub fn redrive_plan(tasks: &[RedriveTask<'_>], drive: u32) -> Vec<TaskReset> {
    let succeeded: HashSet<&str> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Succeeded)
        .map(|t| t.id.as_str())
        .collect();
    let order = dependents_first(tasks);
    order
        .into_iter()
        .map(|i| &tasks[i])
        .filter(|t| {
            matches!(
                t.status,
                TaskStatus::Failed | TaskStatus::Cancelled | TaskStatus::Skipped
            ) && t.drive < drive
        })
        .map(|t| {
            let deps_done: Vec<TaskId> = t
                .depends_on
                .iter()
                .filter(|d| succeeded.contains(d.as_str()))
                .cloned()
                .collect();
            let deps_remaining = (t.depends_on.len() - deps_done.len()) as u32;
            let attempt = if t.ran { t.attempt + 1 } else { t.attempt };
            TaskReset {
                id: t.id.clone(),
                from: t.status,
                from_attempt: t.attempt,
                status: if deps_remaining == 0 {
                    TaskStatus::Queued
                } else {
                    TaskStatus::Waiting
                },
                attempt,
                prior_attempts: attempt - 1,
                deps_done,
                deps_remaining,
            }
        })
        .collect()
}

/// Indexes of `tasks` in an order where every task comes before its dependencies: the DAG's
/// topological order, reversed. A damaged workflow (no DAG) keeps its stored order.
fn dependents_first(tasks: &[RedriveTask<'_>]) -> Vec<usize> {
    let specs: Vec<TaskSpec> = tasks
        .iter()
        .map(|t| {
            TaskSpec::shape(
                t.id,
                "",
                t.depends_on.iter().map(|d| d.to_string()).collect(),
            )
        })
        .collect();
    let Ok(dag) = Dag::build(&specs) else {
        return (0..tasks.len()).collect();
    };
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    dag.topological_order()
        .iter()
        .rev()
        .filter_map(|id| index.get(id).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: WorkflowStatus, control: Option<Control>) -> ControlState {
        ControlState {
            status,
            control,
            tasks_remaining: 2,
            drive: 0,
        }
    }

    #[test]
    fn a_record_keeps_the_newest_control_events_and_drops_the_oldest() {
        assert_eq!(controls_to_drop(0), 0);
        assert_eq!(
            controls_to_drop(MAX_CONTROL_EVENTS - 1),
            0,
            "fills up to the limit"
        );
        assert_eq!(
            controls_to_drop(MAX_CONTROL_EVENTS),
            1,
            "then one out, one in"
        );
        // A record written before the limit, or past it by racing appends, comes back to it.
        assert_eq!(controls_to_drop(2_000), 2_001 - MAX_CONTROL_EVENTS);
    }

    #[test]
    fn two_cancels_are_one_cancel_and_force_upgrades_it() {
        let cancelling = state(
            WorkflowStatus::Running,
            Some(Control::Cancelling { force: false }),
        );
        let cancel = ControlAction::Cancel { force: false };
        assert_eq!(decide(&cancelling, cancel), Ok(ControlChange::Unchanged));
        assert_eq!(
            decide(&cancelling, ControlAction::Cancel { force: true }),
            Ok(ControlChange::Cancel { force: true })
        );
        let forced = state(
            WorkflowStatus::Running,
            Some(Control::Cancelling { force: true }),
        );
        assert_eq!(decide(&forced, cancel), Ok(ControlChange::Unchanged));
    }

    #[test]
    fn finished_workflows_refuse_every_control_but_a_redrive_of_a_failure() {
        for status in [WorkflowStatus::Succeeded, WorkflowStatus::Failed] {
            let s = state(status, None);
            for action in [
                ControlAction::Cancel { force: true },
                ControlAction::Pause,
                ControlAction::Resume,
            ] {
                let refusal = decide(&s, action).unwrap_err();
                assert_eq!(refusal.status, status.as_str());
            }
        }
        assert_eq!(
            decide(&state(WorkflowStatus::Failed, None), ControlAction::Redrive),
            Ok(ControlChange::Redrive { drive: 1 })
        );
        assert!(decide(
            &state(WorkflowStatus::Succeeded, None),
            ControlAction::Redrive
        )
        .is_err());
    }

    #[test]
    fn a_running_workflow_cannot_be_resumed_or_redriven() {
        let running = state(WorkflowStatus::Running, None);
        assert_eq!(
            decide(&running, ControlAction::Resume).unwrap_err().status,
            "running"
        );
        let paused = state(WorkflowStatus::Running, Some(Control::Paused));
        assert_eq!(
            decide(&paused, ControlAction::Redrive).unwrap_err().status,
            "paused"
        );
        assert_eq!(
            decide(&paused, ControlAction::Pause),
            Ok(ControlChange::Unchanged)
        );
        assert_eq!(
            decide(&paused, ControlAction::Resume),
            Ok(ControlChange::Resume)
        );
        assert_eq!(
            decide(&paused, ControlAction::Cancel { force: false }),
            Ok(ControlChange::Cancel { force: false })
        );
    }

    #[test]
    fn a_redrive_restarts_only_what_did_not_succeed_dependents_first() {
        let id = |text: &str| -> TaskId { text.parse().unwrap() };
        let (ida, idb, idc) = (id("a"), id("b"), id("c"));
        let none: Vec<TaskId> = vec![];
        let a = vec![id("a")];
        let ab = vec![id("a"), id("b")];
        let tasks = [
            RedriveTask {
                id: &ida,
                status: TaskStatus::Succeeded,
                depends_on: &none,
                attempt: 1,
                ran: true,
                drive: 0,
            },
            RedriveTask {
                id: &idb,
                status: TaskStatus::Failed,
                depends_on: &a,
                attempt: 3,
                ran: true,
                drive: 0,
            },
            RedriveTask {
                id: &idc,
                status: TaskStatus::Skipped,
                depends_on: &ab,
                attempt: 1,
                ran: false,
                drive: 0,
            },
        ];
        let plan = redrive_plan(&tasks, 1);
        let ids: Vec<&str> = plan.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            ["c", "b"],
            "the dependent is reset before its dependency"
        );
        let b = &plan[1];
        assert_eq!(
            (b.status, b.attempt, b.prior_attempts),
            (TaskStatus::Queued, 4, 3)
        );
        assert_eq!(b.deps_done, ["a"]);
        let c = &plan[0];
        assert_eq!(
            (c.status, c.attempt, c.deps_remaining),
            (TaskStatus::Waiting, 1, 1)
        );
        assert!(
            redrive_plan(&tasks, 0).is_empty(),
            "already reset for drive 0"
        );
    }
}
