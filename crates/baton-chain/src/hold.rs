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
