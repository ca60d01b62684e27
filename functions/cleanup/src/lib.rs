//! cleanup: the scheduled sweep that keeps work from getting stuck.
//!
//! It reads the sparse lease index, one query per shard, for leases that ran out:
//! - a `running` task whose handler died is handed back to routing with a new attempt, or
//!   failed once it has used up `MAX_LEASE_ATTEMPTS`;
//! - a `queued` task that no handler claimed in time (its message was lost, or never sent
//!   because orchestrate died after storing the workflow) is sent to routing again.
//!
//! Finished workflows, tasks and outcomes carry an `expires_at` attribute written when they
//! finish, and DynamoDB's TTL removes them; the sweep has nothing to delete.

use baton::clock::now_ms;
use baton::completion::{fail_task, ChainError};
use baton::config::Settings;
use baton::domain::task::{FailureKind, TaskFailure, TaskStatus};
use baton::messages::{RouteMessage, TaskRef, FORMAT_VERSION};
use baton::queue::TaskQueue;
use baton::store::keys::LEASE_SHARDS;
use baton::store::{ExpiredLease, WorkflowStore};
use lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;
use tracing::Instrument;

/// Leases handled per shard per sweep; the rest wait for the next tick.
pub const SWEEP_LIMIT: i32 = 200;

pub struct CleanupDeps<S, Q> {
    pub store: S,
    pub queue: Q,
    pub settings: Settings,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Running tasks handed back to routing with a new attempt.
    pub reclaimed: u32,
    /// Queued tasks sent to routing again.
    pub redispatched: u32,
    /// Tasks failed after too many expired leases.
    pub failed: u32,
    /// Leases that could not be handled this time (logged; retried on the next sweep).
    pub errors: u32,
}

/// The scheduled event's content is irrelevant: every tick sweeps.
pub async fn handle_tick<S, Q>(
    deps: &CleanupDeps<S, Q>,
    _event: LambdaEvent<serde_json::Value>,
) -> Result<SweepReport, Error>
where
    S: WorkflowStore,
    Q: TaskQueue,
{
    Ok(sweep(deps, now_ms()).await)
}

/// Handles every lease that expired before `now`.
pub async fn sweep<S, Q>(deps: &CleanupDeps<S, Q>, now: i64) -> SweepReport
where
    S: WorkflowStore,
    Q: TaskQueue,
{
    let mut report = SweepReport::default();
    for shard in 0..LEASE_SHARDS {
        let leases = match deps.store.expired_leases(shard, now, SWEEP_LIMIT).await {
            Ok(leases) => leases,
            Err(error) => {
                tracing::error!(shard, %error, "lease index query failed");
                report.errors += 1;
                continue;
            }
        };
        for lease in leases {
            let span = lease.task.span("cleanup");
            match handle_expired(deps, &lease, now).instrument(span).await {
                Ok(Some(outcome)) => match outcome {
                    Handled::Reclaimed => report.reclaimed += 1,
                    Handled::Redispatched => report.redispatched += 1,
                    Handled::Failed => report.failed += 1,
                },
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "expired lease not handled; next sweep retries");
                    report.errors += 1;
                }
            }
        }
    }
    if report != SweepReport::default() {
        tracing::info!(?report, "sweep done");
    }
    report
}

enum Handled {
    Reclaimed,
    Redispatched,
    Failed,
}

async fn handle_expired<S, Q>(
    deps: &CleanupDeps<S, Q>,
    lease: &ExpiredLease,
    now: i64,
) -> Result<Option<Handled>, ChainError>
where
    S: WorkflowStore,
    Q: TaskQueue,
{
    let task = &lease.task;
    if lease.status == TaskStatus::Running && task.attempt >= deps.settings.max_lease_attempts {
        let failure = TaskFailure::new(
            FailureKind::LeaseExpired,
            format!(
                "the task's handler stopped before finishing, {} times",
                task.attempt
            ),
        );
        let failed = fail_task(
            &deps.store,
            &deps.queue,
            &deps.settings,
            task,
            TaskStatus::Running,
            failure,
            now,
        )
        .await?;
        if failed {
            tracing::warn!("lease expired too often; task failed");
        }
        return Ok(failed.then_some(Handled::Failed));
    }

    let dispatch_until = now + deps.settings.dispatch_timeout.as_millis() as i64;
    let Some(attempt) = deps.store.requeue_expired(lease, dispatch_until).await? else {
        return Ok(None);
    };
    deps.queue
        .send_route(&[RouteMessage {
            v: FORMAT_VERSION,
            task: TaskRef {
                attempt,
                ..task.clone()
            },
            capability: lease.capability.clone(),
        }])
        .await?;
    Ok(Some(if lease.status == TaskStatus::Running {
        tracing::warn!(
            new_attempt = attempt,
            "handler died holding the lease; task reclaimed"
        );
        Handled::Reclaimed
    } else {
        tracing::warn!("queued task was not claimed in time; sent to routing again");
        Handled::Redispatched
    }))
}
