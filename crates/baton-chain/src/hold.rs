//! Brings a workflow's tasks in line with its control: the second step of cancel, pause,
//! resume and redrive. The API runs it right after the workflow record took the control, and
//! the repair sweep runs it again for a workflow whose control a dead handler left half done,
//! so every step here is idempotent and decided from what is stored.

use crate::config::Settings;
use crate::error::ChainError;
use crate::finish::{complete_task, finish_at};
use crate::queue::TaskQueue;
use crate::store::{ChainStore, HoldReleased};
use baton_types::control::{redrive_plan, Control, Hold, RedriveTask};
use baton_types::messages::RouteMessage;
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::records::{TaskRecord, WorkflowView};
use baton_types::task::{TaskProfile, TaskStatus};

/// A re-read task that keeps changing under a resume is left to the next sweep after this.
const RELEASE_TRIES: usize = 3;

/// What bringing the tasks in line did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    pub cancelled: u32,
    pub held: u32,
    pub released: u32,
    pub reset: u32,
}

impl Reconciled {
    pub fn changed(&self) -> bool {
        *self != Reconciled::default()
    }
}

/// The failure a task cancelled by a cancel request carries.
pub fn cancel_failure(force: bool) -> TaskFailure {
    TaskFailure::new(
        FailureKind::Cancelled,
        if force {
            "the workflow was cancelled (force) before the task ended"
        } else {
            "the workflow was cancelled before the task started"
        },
    )
}

/// Applies the workflow's control (or its absence, or a redrive) to each of its tasks.
pub async fn reconcile<S, Q>(
    store: &S,
    queue: &Q,
    settings: &Settings,
    view: &WorkflowView,
    now_ms: i64,
) -> Result<Reconciled, ChainError>
where
    S: ChainStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    let w = &view.workflow;
    let mut done = Reconciled::default();
    if w.status.is_terminal() {
        return Ok(done);
    }
    let (tenant, workflow_id) = (&w.tenant, &w.id);
    let dispatch_until = now_ms + settings.dispatch_timeout.as_millis() as i64;
    let mut ready = Vec::new();

    // A redrive cut short: the tasks of the new drive not reset yet.
    let tasks = redrive_tasks(view);
    if w.drive > 0 {
        let by_id: std::collections::HashMap<&str, &TaskRecord> =
            view.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        for reset in redrive_plan(&tasks, w.drive) {
            let Some(task) = by_id.get(reset.id.as_str()).copied() else {
                continue;
            };
            let profile = TaskProfile {
                prior_attempts: reset.prior_attempts,
                // A deadline that passed would fail the task at once: the redrive lifts it.
                deadline_at_ms: task.profile.deadline_at_ms.filter(|at| *at > now_ms),
                ..task.profile.clone()
            };
            if store
                .reset_task(
                    task,
                    &reset,
                    &profile,
                    w.drive,
                    dispatch_until,
                    finish_at(settings, now_ms).expires_at_s,
                )
                .await?
            {
                done.reset += 1;
                if reset.status == TaskStatus::Queued {
                    let task_ref = baton_types::messages::TaskRef {
                        attempt: reset.attempt,
                        ..task.task_ref()
                    };
                    ready.push(RouteMessage::new(task_ref, &task.capability, profile));
                }
            }
        }
    }

    let unfinished = view.tasks.iter().filter(|t| !t.status.is_terminal());
    match w.control {
        Some(Control::Cancelling { force }) => {
            let failure = cancel_failure(force);
            let finish = finish_at(settings, now_ms);
            // Every task not started is cancelled before any follow-up runs.
            let mut cancelled = Vec::new();
            for task in unfinished {
                let running = task.status == TaskStatus::Running;
                if !running || force {
                    if store
                        .cancel_task(tenant, workflow_id, &task.id, &failure, force, finish)
                        .await?
                    {
                        cancelled.push(TaskRecord {
                            status: TaskStatus::Cancelled,
                            ..task.clone()
                        });
                    } else if store
                        .hold_task(tenant, workflow_id, &task.id, Hold::Cancel)
                        .await?
                        .is_some()
                    {
                        // Claimed since the view was read: it runs out its attempt, held, so
                        // no retry of it can run after the cancel answered.
                        done.held += 1;
                    }
                } else if task.hold != Some(Hold::Cancel)
                    && store
                        .hold_task(tenant, workflow_id, &task.id, Hold::Cancel)
                        .await?
                        .is_some()
                {
                    done.held += 1;
                }
            }
            for task in &cancelled {
                complete_task(store, queue, settings, task, now_ms).await?;
            }
            done.cancelled += cancelled.len() as u32;
        }
        Some(Control::Paused) => {
            for task in unfinished {
                let held = match task.hold {
                    Some(_) => Some(task.clone()),
                    None => {
                        let held = store
                            .hold_task(tenant, workflow_id, &task.id, Hold::Pause)
                            .await?;
                        done.held += u32::from(held.is_some());
                        held
                    }
                };
                // A queued task waits for the resume, out of the sweeps' sight.
                if let Some(held) = held.filter(|t| t.status == TaskStatus::Queued) {
                    if held.lease_until_ms.is_some() {
                        store.park_task(&held.task_ref()).await?;
                    }
                }
            }
        }
        None => {
            for task in unfinished.filter(|t| t.hold == Some(Hold::Pause)) {
                if let Some(released) = release(store, task, dispatch_until).await? {
                    ready.push(RouteMessage::new(
                        released.task_ref(),
                        &released.capability,
                        released.profile.clone(),
                    ));
                }
                done.released += 1;
            }
        }
    }
    queue.send_route(&ready).await?;
    Ok(done)
}

/// The workflow's tasks as a redrive plans them.
pub fn redrive_tasks(view: &WorkflowView) -> Vec<RedriveTask<'_>> {
    view.tasks
        .iter()
        .map(|t| RedriveTask {
            id: &t.id,
            status: t.status,
            depends_on: &t.depends_on,
            attempt: t.attempt,
            ran: t.claims > 0 || !t.attempts.is_empty(),
            drive: t.drive,
        })
        .collect()
}

/// Lifts a pause from one task, reading it again while it changes under the write. Returns
/// the task when it must be sent to routing.
async fn release<S>(
    store: &S,
    task: &TaskRecord,
    dispatch_until: i64,
) -> Result<Option<TaskRecord>, ChainError>
where
    S: ChainStore + ?Sized,
{
    let mut read = task.clone();
    for _ in 0..RELEASE_TRIES {
        match store.release_hold(&read, dispatch_until).await? {
            HoldReleased::Send(record) => return Ok(Some(*record)),
            HoldReleased::Done => return Ok(None),
            HoldReleased::Changed => {
                match store
                    .task(&read.tenant, &read.workflow_id, &read.id)
                    .await?
                {
                    Some(fresh) => read = fresh,
                    None => return Ok(None),
                }
            }
        }
    }
    tracing::warn!(task = %task.id, "task kept changing during the resume; the sweep resumes it");
    Ok(None)
}

/// What execute-agent does with an attempt its claim found held: a cancelled workflow's task
/// is cancelled now (and counted); a paused one's waits, parked, for the resume.
pub async fn honour_hold<S, Q>(
    store: &S,
    queue: &Q,
    settings: &Settings,
    record: &TaskRecord,
    hold: Hold,
    now_ms: i64,
) -> Result<Option<TaskRecord>, ChainError>
where
    S: ChainStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    match hold {
        Hold::Pause => {
            store.park_task(&record.task_ref()).await?;
            Ok(None)
        }
        Hold::Cancel => {
            let finish = finish_at(settings, now_ms);
            let cancelled = store
                .cancel_task(
                    &record.tenant,
                    &record.workflow_id,
                    &record.id,
                    &cancel_failure(false),
                    false,
                    finish,
                )
                .await?;
            if !cancelled {
                return Ok(None);
            }
            let record = TaskRecord {
                status: TaskStatus::Cancelled,
                ..record.clone()
            };
            complete_task(store, queue, settings, &record, now_ms).await?;
            Ok(Some(record))
        }
    }
}

/// Controls carried to the tasks, on the memory store.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::fixtures::{agent_name, final_failure, id, tenant, Harness};
    use crate::store::{ClaimOutcome, WorkflowControls, WorkflowStore};
    use baton_types::control::ControlAction;
    use baton_types::task::WorkflowStatus;
    use serde_json::json;

    const CHAIN: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"])];
    /// A chain beside a root that is already running.
    const WITH_RUNNING: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"]), ("c", &[])];

    async fn reconciled(h: &Harness, view: &WorkflowView, now_ms: i64) -> Reconciled {
        reconcile(&h.store, &h.queue, &h.settings, view, now_ms)
            .await
            .expect("the memory store and queue answer")
    }

    #[tokio::test]
    async fn a_pause_holds_every_unfinished_task_and_parks_the_queued_ones() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        let paused = h.control("w", ControlAction::Pause, 2_000).await;
        let done = reconciled(&h, &paused, 2_000).await;
        assert_eq!(done.held, 2);
        let view = h.view("w").await;
        assert!(view.tasks.iter().all(|t| t.hold == Some(Hold::Pause)));
        assert_eq!(
            view.tasks[0].lease_until_ms, None,
            "parked: out of the sweeps' sight"
        );
        let claim = h
            .store
            .claim_task(
                &view.tasks[0].task_ref(),
                &agent_name(),
                None,
                "tok",
                9_000,
                2_500,
            )
            .await
            .unwrap();
        assert!(matches!(claim, ClaimOutcome::Held(_, Hold::Pause)));
        assert!(
            !reconciled(&h, &view, 3_000).await.changed(),
            "a repair finds nothing to do"
        );
    }

    #[tokio::test]
    async fn a_resume_lifts_the_holds_and_sends_the_queued_tasks() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        let paused = h.control("w", ControlAction::Pause, 2_000).await;
        reconciled(&h, &paused, 2_000).await;
        let resumed = h.control("w", ControlAction::Resume, 3_000).await;
        let done = reconciled(&h, &resumed, 3_000).await;
        assert_eq!(done.released, 2);
        assert_eq!(h.routed(), ["a"], "only the queued task is sent");
        let view = h.view("w").await;
        assert!(view.tasks.iter().all(|t| t.hold.is_none()));
        let dispatch = h.settings.dispatch_timeout.as_millis() as i64;
        assert_eq!(view.tasks[0].lease_until_ms, Some(3_000 + dispatch));
        assert!(!reconciled(&h, &view, 4_000).await.changed());
        assert!(h.routed().is_empty(), "a repair sends nothing twice");
    }

    #[tokio::test]
    async fn a_cancel_cancels_what_has_not_started_and_waits_for_what_runs() {
        let h = Harness::with_workflow("w", WITH_RUNNING, 1_000).await;
        let c = h.claim("w", "c", "tok", 1_500).await;
        let cancelling = h
            .control("w", ControlAction::Cancel { force: false }, 2_000)
            .await;
        let done = reconciled(&h, &cancelling, 2_000).await;
        assert_eq!((done.cancelled, done.held), (2, 1));
        let view = h.view("w").await;
        let statuses: Vec<_> = view.tasks.iter().map(|t| t.status).collect();
        assert_eq!(
            statuses,
            [
                TaskStatus::Cancelled,
                TaskStatus::Cancelled,
                TaskStatus::Running
            ]
        );
        assert_eq!(view.tasks[2].hold, Some(Hold::Cancel));
        assert_eq!(view.workflow.tasks_remaining, 1);
        // The running task ends as it would have; then the workflow ends cancelled.
        h.conclude(&c, "tok", Ok(json!(1)), 3_000).await;
        let w = h.view("w").await.workflow;
        assert_eq!(
            (w.status, w.tasks_remaining),
            (WorkflowStatus::Cancelled, 0)
        );
        assert!(h.routed().is_empty());
    }

    #[tokio::test]
    async fn a_forced_cancel_ends_running_tasks_and_keeps_their_late_result_once() {
        let h = Harness::with_workflow("w", WITH_RUNNING, 1_000).await;
        let c = h.claim("w", "c", "tok", 1_500).await;
        let cancelling = h
            .control("w", ControlAction::Cancel { force: true }, 2_000)
            .await;
        assert_eq!(reconciled(&h, &cancelling, 2_000).await.cancelled, 3);
        assert_eq!(h.view("w").await.workflow.status, WorkflowStatus::Cancelled);
        for now in [3_000, 3_500] {
            let late = h.conclude(&c, "tok", Ok(json!("late")), now).await;
            assert!(matches!(late, crate::attempt::Concluded::Superseded));
        }
        let task = h.task("w", "c").await;
        assert_eq!(task.status, TaskStatus::Cancelled);
        assert_eq!(task.attempts.len(), 1);
        assert!(task.attempts[0].late);
    }

    #[tokio::test]
    async fn a_held_queued_attempt_is_cancelled_or_parked_as_its_hold_says() {
        let h = Harness::with_workflow("w", &[("a", &[]), ("z", &[])], 1_000).await;
        let held = h
            .store
            .hold_task(&tenant(), &id("w"), &id("z"), Hold::Pause)
            .await
            .unwrap()
            .unwrap();
        let parked = honour_hold(&h.store, &h.queue, &h.settings, &held, Hold::Pause, 1_500)
            .await
            .unwrap();
        assert_eq!(parked, None);
        assert_eq!(h.task("w", "z").await.lease_until_ms, None);

        let held = h
            .store
            .hold_task(&tenant(), &id("w"), &id("a"), Hold::Cancel)
            .await
            .unwrap()
            .unwrap();
        for now in [2_000, 2_500] {
            let cancelled = honour_hold(&h.store, &h.queue, &h.settings, &held, Hold::Cancel, now)
                .await
                .unwrap();
            assert_eq!(cancelled.map(|t| t.status), Some(TaskStatus::Cancelled));
        }
        let w = h.view("w").await.workflow;
        assert_eq!(
            (w.tasks_done.clone(), w.tasks_remaining),
            (vec![id("a")], 1)
        );
    }

    #[tokio::test]
    async fn a_redrive_runs_what_failed_again_as_a_new_attempt_and_archives_the_old() {
        let h = Harness::with_workflow("w", CHAIN, 1_000).await;
        h.run("w", "a", Err(final_failure()), 2_000).await;
        assert_eq!(h.view("w").await.workflow.status, WorkflowStatus::Failed);
        let redriven = h.control("w", ControlAction::Redrive, 3_000).await;
        assert_eq!(redriven.workflow.status, WorkflowStatus::Running);
        let done = reconciled(&h, &redriven, 3_000).await;
        assert_eq!(done.reset, 2);
        let sent = h.queue.drain_route();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            (sent[0].0.task.task_id.as_str(), sent[0].0.task.attempt),
            ("a", 2)
        );
        let view = h.view("w").await;
        assert_eq!(
            (view.tasks[0].status, view.tasks[0].attempts.len()),
            (TaskStatus::Queued, 0)
        );
        assert_eq!(view.tasks[1].status, TaskStatus::Waiting);
        let archive = h.store.archived_drives(&tenant(), &id("w")).await.unwrap();
        assert_eq!(
            (archive.len(), archive[0].task_id.as_str(), archive[0].drive),
            (1, "a", 0)
        );
        assert_eq!(
            reconciled(&h, &view, 3_500).await.reset,
            0,
            "reset once per drive"
        );

        h.run("w", "a", Ok(json!(1)), 4_000).await;
        h.run("w", "b", Ok(json!(2)), 5_000).await;
        assert_eq!(h.view("w").await.workflow.status, WorkflowStatus::Succeeded);
    }
}
