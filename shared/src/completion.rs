//! What follows the end of a task attempt, whoever ended it (execute-agent, route when no agent
//! can take the task, cleanup when leases ran out): count the task on its workflow, release or
//! skip its dependents, and finish the workflow.
//!
//! Every step is a conditional write, so a redelivered message can run this again from the
//! start and only the steps that did not happen yet take effect.

use futures::future::join_all;

use crate::config::Settings;
use crate::domain::task::{TaskFailure, TaskStatus, WorkflowStatus};
use crate::messages::{RouteMessage, TaskRef, FORMAT_VERSION};
use crate::queue::{QueueError, TaskQueue};
use crate::store::{
    Finish, Recorded, Release, StoreError, TaskResult, WorkflowProgress, WorkflowStore,
};

/// The errors of the chain's handlers: a step's store or queue request failed. SQS delivers
/// the message again and the handler resumes where the conditions say it stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// How many dependents are released at once.
const RELEASE_CONCURRENCY: usize = 16;

/// The timestamps of a terminal write at `now_ms` under the configured retention.
pub fn finish_at(settings: &Settings, now_ms: i64) -> Finish {
    Finish {
        now_ms,
        expires_at_s: now_ms / 1000 + settings.retention.as_secs() as i64,
    }
}

/// Runs the steps after `task` ended (with `failure`, or successfully) and was recorded.
pub async fn complete_task<S, Q>(
    store: &S,
    queue: &Q,
    settings: &Settings,
    task: &TaskRef,
    dependents: &[String],
    failure: Option<&TaskFailure>,
    now_ms: i64,
) -> Result<WorkflowProgress, ChainError>
where
    S: WorkflowStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    let finish = finish_at(settings, now_ms);
    let (tenant, workflow_id) = (&task.tenant, &task.workflow_id);
    let progress = store
        .count_finished_task(tenant, workflow_id, &task.task_id, failure, finish)
        .await?;
    tracing::debug!(
        workflow_status = %progress.status,
        tasks_remaining = progress.tasks_remaining,
        "task counted on its workflow"
    );
    if progress.status != WorkflowStatus::Running || failure.is_some() {
        skip_descendants(store, tenant, workflow_id, dependents, finish).await?;
        return Ok(progress);
    }

    let dispatch_until = now_ms + settings.dispatch_timeout.as_millis() as i64;
    // Fan-out DAGs can have many dependents: release them a few at a time, not one by one.
    let mut releases = Vec::with_capacity(dependents.len());
    for chunk in dependents.chunks(RELEASE_CONCURRENCY) {
        let released = join_all(chunk.iter().map(|dependent| {
            store.release_dependent(
                tenant,
                workflow_id,
                dependent,
                &task.task_id,
                dispatch_until,
            )
        }))
        .await;
        for (dependent, release) in chunk.iter().zip(released) {
            releases.push((dependent, release?));
        }
    }
    let ready: Vec<RouteMessage> = releases
        .into_iter()
        .filter_map(|(dependent, release)| match release {
            Release::Ready {
                attempt,
                capability,
            } => {
                tracing::info!(dependent = %dependent, "dependent released");
                Some(RouteMessage {
                    v: FORMAT_VERSION,
                    task: TaskRef {
                        tenant: tenant.clone(),
                        workflow_id: workflow_id.clone(),
                        task_id: dependent.clone(),
                        attempt,
                    },
                    capability,
                })
            }
            Release::StillWaiting | Release::Moved => None,
        })
        .collect();
    queue.send_route(&ready).await?;

    if progress.tasks_remaining == 0 && store.complete_workflow(tenant, workflow_id, finish).await?
    {
        tracing::info!(workflow = %workflow_id, "workflow succeeded");
    }
    Ok(progress)
}

/// Fails a task that is not running an agent call (no agent can take it, or its handlers kept
/// dying), then runs the steps that follow its end. `expected` is the status it must still
/// have. Returns false if the task had moved on, and nothing was written.
pub async fn fail_task<S, Q>(
    store: &S,
    queue: &Q,
    settings: &Settings,
    task: &TaskRef,
    expected: TaskStatus,
    failure: TaskFailure,
    now_ms: i64,
) -> Result<bool, ChainError>
where
    S: WorkflowStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    let result = TaskResult::Failed(failure);
    match store
        .record_result(task, expected, &result, finish_at(settings, now_ms))
        .await?
    {
        Recorded::Now(record) | Recorded::Earlier(record) => {
            let failure = record.failure.as_ref();
            complete_task(
                store,
                queue,
                settings,
                task,
                &record.dependents,
                failure,
                now_ms,
            )
            .await?;
            Ok(true)
        }
        Recorded::Superseded => Ok(false),
    }
}

/// Marks every task downstream of `dependents` skipped: they can no longer run.
async fn skip_descendants<S>(
    store: &S,
    tenant: &str,
    workflow_id: &str,
    dependents: &[String],
    finish: Finish,
) -> Result<(), StoreError>
where
    S: WorkflowStore + ?Sized,
{
    let mut frontier = dependents.to_vec();
    while let Some(task_id) = frontier.pop() {
        if let Some(next) = store
            .skip_task(tenant, workflow_id, &task_id, finish)
            .await?
        {
            frontier.extend(next);
        }
    }
    Ok(())
}
