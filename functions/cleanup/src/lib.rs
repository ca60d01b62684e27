//! cleanup: the scheduled sweep that keeps work from getting stuck, whatever messages were lost.
//!
//! Each tick it does four things:
//! - **Leases** (index `leases`): a `running` attempt whose handler died goes back to routing
//!   as the same attempt (so the agent sees the same `Idempotency-Key`), or fails
//!   `lease_expired` once `MAX_LEASE_ATTEMPTS` handlers died on it. A `queued` task that no
//!   handler took in time is sent again, each time waiting twice as long, and fails
//!   `not_dispatched` after `MAX_DISPATCHES`; one whose workflow record was never written is
//!   dropped.
//! - **Unfinished workflows** (index `sweeps`): each running workflow is looked at every
//!   `REPAIR_AFTER_SECONDS` and repaired from its tasks' recorded states: an ended task whose
//!   follow-up did not run to its end (not counted, dependents not released or skipped) has it
//!   run again, and a workflow whose tasks are all counted is finished.
//! - **Deadlines**: a workflow past its `timeout_s` has its unfinished tasks cancelled and
//!   fails with `deadline_exceeded`.
//! - **Health**: agents whose health check is due are probed (a few at a time, a short
//!   time-out, no payload) and their status stored for routing.
//! - **Sessions**: a session whose idle time-out has passed is ended, with every item it
//!   created (TTL is only the backstop).
//!
//! Finished workflows, tasks and outcomes carry an `expires_at` attribute written when they
//! finish, and DynamoDB's TTL removes them; the sweep has nothing to delete. An unfinished
//! workflow (paused, retrying slowly, redriven) is kept: every half retention the repair
//! moves its ended tasks' `expires_at` on and refreshes its payloads in the bucket.

use baton_types::ids::TenantId;
use baton_types::ids::WorkflowId;
use std::time::Duration;

use baton_aws::dynamo::keys::LEASE_SHARDS;
use baton_chain::attempt::{conclude_attempt, AttemptConclusion, AttemptRun};
use baton_chain::config::Settings;
use baton_chain::error::ChainError;
use baton_chain::finish::{complete_task, finish_at, finish_if_done, follow_up_incomplete};
use baton_chain::hold::reconcile;
use baton_chain::improve::{self, AnalysisStore};
use baton_chain::prober::HealthProber;
use baton_chain::queue::TaskQueue;
use baton_chain::store::{
    AgentRegistry, AnalysisSchedule, AttemptHolder, ChainStore, ExpiredLease, SessionStore,
    StoreError,
};
use baton_types::clock::now_ms;
use baton_types::health::after_probe;
use baton_types::messages::RouteMessage;
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::retry::RetryPolicy;
use baton_types::task::TaskStatus;
use futures::StreamExt;
use lambda_runtime::{Error, LambdaEvent};
use serde::Serialize;
use tracing::Instrument;

/// Leases handled per shard per sweep; the rest wait for the next tick.
pub const SWEEP_LIMIT: i32 = 200;
/// Workflows looked at per shard per sweep.
pub const REPAIR_LIMIT: i32 = 100;
/// Idle sessions ended per sweep.
pub const SESSION_LIMIT: i32 = 100;
/// Health probes per sweep, shared round-robin among the tenants of the due checks read
/// (`domain::health::DUE_READ_FACTOR` times as many, oldest first).
pub const PROBE_LIMIT: i32 = 100;
/// Tenants' daily analyses one sweep runs at most, time left permitting: each reads a day of
/// results, so a few per minute keep a sweep within its budget.
pub const ANALYSES_PER_SWEEP: usize = 2;
/// A tenant whose analysis failed is tried again this much later, so it never holds up others.
const ANALYSIS_RETRY_MS: i64 = 3_600_000;
/// When an agent found not probeable (disabled) is due again, if the index still holds it.
const UNPROBED_WAIT_MS: i64 = 86_400_000;
/// Leases and workflows handled at once: a sweep must fit in the function's 60 s.
const SWEEP_CONCURRENCY: usize = 8;
/// How long one workflow's repair may take in one sweep: past it, the repair stops where it
/// is (every step is conditional, so the next sweep resumes it) and the others go on.
pub const REPAIR_BUDGET: Duration = Duration::from_secs(10);
/// How long a sweep starts new work: the rest waits for the next tick, inside the
/// function's 60 s.
pub const SWEEP_BUDGET: Duration = Duration::from_secs(40);
const PROBE_CONCURRENCY: usize = 8;
/// A redispatched task waits at most this long before it is sent again.
const MAX_DISPATCH_WAIT: Duration = Duration::from_secs(3_600);
/// An ended task is left to its own handler for this long before the repair runs its
/// follow-up (the handler is most likely doing it right now).
const FOLLOW_UP_GRACE_MS: i64 = 10_000;

pub struct CleanupDeps<S, Q, P> {
    pub store: S,
    pub queue: Q,
    pub prober: P,
    pub settings: Settings,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Running tasks whose handler died, handed back to routing (same attempt).
    pub reclaimed: u32,
    /// Queued tasks sent to routing again.
    pub redispatched: u32,
    /// Tasks failed after too many expired leases or dispatches.
    pub failed: u32,
    /// Tasks whose workflow record was never written, dropped.
    pub abandoned: u32,
    /// Unfinished workflows looked at.
    pub workflows_checked: u32,
    /// Ended tasks whose interrupted follow-up was run again, and workflows finished.
    pub repaired: u32,
    /// Workflows failed because their deadline passed.
    pub deadlines: u32,
    /// Agents probed.
    pub probed: u32,
    /// Sessions ended by their idle time-out, with everything they held.
    pub sessions_ended: u32,
    /// Tenants' daily self-improvement analyses run.
    pub analyses: u32,
    /// Items that could not be handled this time (logged; retried on the next sweep).
    pub errors: u32,
}

/// The scheduled event's content is irrelevant: every tick sweeps.
pub async fn handle_tick<S, Q, P>(
    deps: &CleanupDeps<S, Q, P>,
    _event: LambdaEvent<serde_json::Value>,
) -> Result<SweepReport, Error>
where
    S: ChainStore + AgentRegistry + SessionStore + AnalysisStores,
    Q: TaskQueue,
    P: HealthProber,
{
    Ok(sweep(deps, now_ms()).await)
}

/// Everything one tick does, as of `now`.
pub async fn sweep<S, Q, P>(deps: &CleanupDeps<S, Q, P>, now: i64) -> SweepReport
where
    S: ChainStore + AgentRegistry + SessionStore + AnalysisStores,
    Q: TaskQueue,
    P: HealthProber,
{
    let mut report = SweepReport::default();
    let until = std::time::Instant::now() + SWEEP_BUDGET;
    sweep_leases(deps, now, &mut report).await;
    sweep_workflows(deps, now, until, &mut report).await;
    probe_agents(deps, now, &mut report).await;
    end_idle_sessions(deps, now, &mut report).await;
    run_due_analyses(deps, now, until, &mut report).await;
    if report != SweepReport::default() {
        tracing::info!(?report, "sweep done");
    }
    report
}

async fn sweep_leases<S, Q, P>(deps: &CleanupDeps<S, Q, P>, now: i64, report: &mut SweepReport)
where
    S: ChainStore,
    Q: TaskQueue,
{
    for shard in 0..LEASE_SHARDS {
        let leases = match deps.store.expired_leases(shard, now, SWEEP_LIMIT).await {
            Ok(leases) => leases,
            Err(error) => {
                tracing::error!(shard, %error, "lease index query failed");
                report.errors += 1;
                continue;
            }
        };
        let handled: Vec<_> = futures::stream::iter(leases)
            .map(|lease| async move {
                let span = lease.task.span("cleanup");
                // A panic on one tenant's task is that task's failure, not the sweep's.
                baton_aws::batch::isolated(handle_expired(deps, &lease, now))
                    .instrument(span)
                    .await
            })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .collect()
            .await;
        for result in handled {
            match result {
                Ok(Some(Handled::Reclaimed)) => report.reclaimed += 1,
                Ok(Some(Handled::Redispatched)) => report.redispatched += 1,
                Ok(Some(Handled::Failed)) => report.failed += 1,
                Ok(Some(Handled::Abandoned)) => report.abandoned += 1,
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "expired lease not handled; next sweep retries");
                    report.errors += 1;
                }
            }
        }
    }
}

enum Handled {
    Reclaimed,
    Redispatched,
    Failed,
    Abandoned,
}

async fn handle_expired<S, Q, P>(
    deps: &CleanupDeps<S, Q, P>,
    lease: &ExpiredLease,
    now: i64,
) -> Result<Option<Handled>, ChainError>
where
    S: ChainStore,
    Q: TaskQueue,
{
    let task = &lease.task;
    let settings = &deps.settings;
    match lease.status {
        TaskStatus::Running if lease.claims >= settings.max_lease_attempts => {
            let failure = TaskFailure::new(
                FailureKind::LeaseExpired,
                format!(
                    "the task's handler stopped before finishing, {} times",
                    lease.claims
                ),
            );
            let run = AttemptRun {
                agent: lease.agent.clone(),
                started_at_ms: None,
                claims: lease.claims,
                call_ms: None,
                usage: None,
            };
            let ended = fail(
                deps,
                lease,
                AttemptHolder::ExpiredLease(lease.lease_until_ms),
                failure,
                run,
                now,
            )
            .await?;
            if ended {
                tracing::warn!("lease expired too often; task failed");
            }
            Ok(ended.then_some(Handled::Failed))
        }
        TaskStatus::Running => {
            let until = now + settings.dispatch_timeout.as_millis() as i64;
            if !deps.store.requeue_expired(lease, until).await? {
                return Ok(None);
            }
            // The agent whose call was lost gets the same Idempotency-Key again, so that it
            // can recognise the repeat.
            let mut message = RouteMessage::new(
                task.clone(),
                lease.capability.clone(),
                lease.profile.clone(),
            );
            message.prefer = lease.agent.iter().cloned().collect();
            // A re-claim is not a resend: older copies of this attempt stay live.
            message.dispatch = lease.dispatches;
            deps.queue.send_route(&[message]).await?;
            tracing::warn!(
                claims = lease.claims,
                "handler died holding the lease; attempt handed back to routing"
            );
            Ok(Some(Handled::Reclaimed))
        }
        TaskStatus::Queued
            if lease
                .profile
                .paced_until_ms
                .is_some_and(|turn| turn + settings.dispatch_timeout.as_millis() as i64 > now) =>
        {
            // Not lost: it waits for its turn at the tenant's pace. The lease follows the
            // turn (a dependent released before its turn got a lease from its release).
            let turn = lease.profile.paced_until_ms.unwrap_or(now);
            let until = turn + settings.dispatch_timeout.as_millis() as i64;
            deps.store
                .extend_dispatch(task, lease.dispatches, until)
                .await?;
            Ok(None)
        }
        TaskStatus::Queued => {
            // Tasks are written before their workflow record: without one, they were never
            // accepted and must not run.
            if deps
                .store
                .workflow_status(&task.tenant, &task.workflow_id)
                .await?
                .is_none()
            {
                let expires = finish_at(settings, now).expires_at_s;
                let dropped = deps.store.abandon_task(lease, expires).await?;
                if dropped {
                    tracing::warn!("task of a workflow that was never stored; dropped");
                }
                return Ok(dropped.then_some(Handled::Abandoned));
            }
            if lease.dispatches >= settings.max_dispatches {
                let failure = TaskFailure::new(
                    FailureKind::NotDispatched,
                    format!(
                        "the task was sent for execution {} times and no handler took it",
                        lease.dispatches + 1
                    ),
                );
                let ended = fail(
                    deps,
                    lease,
                    AttemptHolder::Queued,
                    failure,
                    AttemptRun::default(),
                    now,
                )
                .await?;
                return Ok(ended.then_some(Handled::Failed));
            }
            // Each dispatch of the same attempt waits twice as long as the one before.
            let wait = settings
                .dispatch_timeout
                .saturating_mul(2 << lease.dispatches.min(16))
                .min(MAX_DISPATCH_WAIT);
            if !deps
                .store
                .requeue_expired(lease, now + wait.as_millis() as i64)
                .await?
            {
                return Ok(None);
            }
            let mut message = RouteMessage::new(
                task.clone(),
                lease.capability.clone(),
                lease.profile.clone(),
            );
            message.dispatch = lease.dispatches + 1;
            deps.queue.send_route(&[message]).await?;
            tracing::warn!(
                dispatches = lease.dispatches + 1,
                "queued task was not claimed in time; sent to routing again"
            );
            Ok(Some(Handled::Redispatched))
        }
        _ => Ok(None),
    }
}

/// Fails the attempt a lease shows, with no retry, and runs the task's follow-up.
async fn fail<S, Q, P>(
    deps: &CleanupDeps<S, Q, P>,
    lease: &ExpiredLease,
    holder: AttemptHolder<'_>,
    failure: TaskFailure,
    run: AttemptRun,
    now: i64,
) -> Result<bool, ChainError>
where
    S: ChainStore,
    Q: TaskQueue,
{
    let concluded = conclude_attempt(
        &deps.store,
        &deps.queue,
        &deps.settings,
        AttemptConclusion {
            task: &lease.task,
            capability: &lease.capability,
            holder,
            result: Err(failure),
            run,
            policy: RetryPolicy::default(),
            prefer: Vec::new(),
            prior_attempts: lease.profile.prior_attempts,
            now_ms: now,
        },
    )
    .await?;
    Ok(!matches!(
        concluded,
        baton_chain::attempt::Concluded::Superseded
    ))
}

async fn sweep_workflows<S, Q, P>(
    deps: &CleanupDeps<S, Q, P>,
    now: i64,
    until: std::time::Instant,
    report: &mut SweepReport,
) where
    S: ChainStore,
    Q: TaskQueue,
{
    for shard in 0..LEASE_SHARDS {
        if std::time::Instant::now() >= until {
            tracing::warn!(
                shard,
                "sweep out of time; the rest of the workflows wait a tick"
            );
            break;
        }
        let due = match deps.store.due_workflows(shard, now, REPAIR_LIMIT).await {
            Ok(due) => due,
            Err(error) => {
                tracing::error!(shard, %error, "sweeps index query failed");
                report.errors += 1;
                continue;
            }
        };
        report.workflows_checked += due.len() as u32;
        let repairs: Vec<_> = futures::stream::iter(due)
            .take_while(|_| std::future::ready(std::time::Instant::now() < until))
            .map(|(tenant, workflow_id)| async move {
                let span = tracing::info_span!("repair", tenant = %tenant, workflow = %workflow_id);
                // A panic on one tenant's workflow is that workflow's failure, not the sweep's.
                let repair =
                    baton_aws::batch::isolated(repair_workflow(deps, &tenant, &workflow_id, now));
                match tokio::time::timeout(REPAIR_BUDGET, repair)
                    .instrument(span)
                    .await
                {
                    Ok(result) => result,
                    Err(_) => {
                        // Looked at again after the usual delay, not first in the next sweep,
                        // so one slow workflow cannot take every sweep's time.
                        let next = now + deps.settings.repair_after.as_millis() as i64;
                        if let Err(error) =
                            deps.store.schedule_check(&tenant, &workflow_id, next).await
                        {
                            tracing::warn!(%error, "the next check was not moved");
                        }
                        Err(ChainError::OutOfTime("the workflow's repair").to_string())
                    }
                }
            })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .collect()
            .await;
        for result in repairs {
            match result {
                Ok(repair) => {
                    report.repaired += repair.repaired;
                    report.deadlines += u32::from(repair.deadline_passed);
                }
                Err(error) => {
                    tracing::error!(%error, "workflow not repaired; next sweep retries");
                    report.errors += 1;
                }
            }
        }
    }
}

/// What repairing one workflow did.
#[derive(Debug, Default)]
struct Repair {
    /// Follow-ups run again, and the workflow finished.
    repaired: u32,
    deadline_passed: bool,
}

/// Brings one unfinished workflow up to date with its tasks' recorded states.
async fn repair_workflow<S, Q, P>(
    deps: &CleanupDeps<S, Q, P>,
    tenant: &TenantId,
    workflow_id: &WorkflowId,
    now: i64,
) -> Result<Repair, ChainError>
where
    S: ChainStore,
    Q: TaskQueue,
{
    let settings = &deps.settings;
    let mut repair = Repair::default();
    // Without inputs and outputs: a partition of any size fits the sweep's memory. A task
    // whose follow-up must run again is read whole on its own.
    let Some(view) = deps.store.workflow_outline(tenant, workflow_id).await? else {
        return Ok(repair);
    };
    if view.workflow.status.is_terminal() {
        return Ok(repair);
    }
    // A control (cancel, pause, resume, redrive) whose handler died before every task took it.
    let w = &view.workflow;
    if w.control.is_some() || w.drive > 0 || view.tasks.iter().any(|t| t.hold.is_some()) {
        let reconciled = reconcile(&deps.store, &deps.queue, settings, &view, now).await?;
        if reconciled.changed() {
            tracing::warn!(
                ?reconciled,
                "a control was carried on to the tasks it had not reached"
            );
            repair.repaired += 1;
        }
    }
    // Half the retention after it was last kept, what it still needs is kept again: its
    // ended tasks and its payloads expire a retention after they were written otherwise.
    let half_retention = settings.retention.as_millis() as i64 / 2;
    if now - view.workflow.kept_at_ms >= half_retention {
        let expires = finish_at(settings, now).expires_at_s;
        let kept = deps
            .store
            .keep_alive(tenant, workflow_id, now - half_retention, now, expires)
            .await?;
        tracing::info!(
            kept,
            "an unfinished workflow's tasks and payloads kept from expiring"
        );
    }
    let deadline = view.workflow.deadline_at_ms;
    if deadline.is_some_and(|at| at <= now) {
        let error = TaskFailure::new(
            FailureKind::DeadlineExceeded,
            "the workflow's deadline (timeout_s) passed before it finished",
        );
        deps.store
            .fail_workflow(tenant, workflow_id, &error, now)
            .await?;
        let finish = finish_at(settings, now);
        // Every unfinished task is cancelled before any follow-up runs, so none of them is
        // skipped on the way by a cancelled dependency.
        let mut cancelled = Vec::new();
        for task in view.tasks.iter().filter(|t| !t.status.is_terminal()) {
            if deps
                .store
                .cancel_task(tenant, workflow_id, &task.id, &error, true, finish)
                .await?
            {
                cancelled.push(baton_types::records::TaskRecord {
                    status: TaskStatus::Cancelled,
                    ..task.clone()
                });
            }
        }
        for task in &cancelled {
            complete_task(&deps.store, &deps.queue, settings, task, now).await?;
        }
        repair.deadline_passed = true;
        tracing::warn!("deadline passed; unfinished tasks cancelled and the workflow failed");
    }
    // The same view serves the follow-ups: a task counted since is counted once anyway.
    for task in &view.tasks {
        let settled = task
            .finished_at_ms
            .is_some_and(|at| at <= now - FOLLOW_UP_GRACE_MS);
        if settled && follow_up_incomplete(&view, task) {
            tracing::warn!(task = %task.id, status = %task.status, "follow-up of an ended task was interrupted; running it again");
            // The item, not its payloads: a follow-up reads an output from the bucket only
            // where it needs one (a turn's answer).
            let Some(record) = deps.store.task(tenant, workflow_id, &task.id).await? else {
                continue;
            };
            complete_task(&deps.store, &deps.queue, settings, &record, now).await?;
            repair.repaired += 1;
        }
    }
    if finish_if_done(&deps.store, settings, &view, now).await? {
        repair.repaired += 1;
    }
    let next = now + settings.repair_after.as_millis() as i64;
    let next = deadline
        .filter(|at| *at > now)
        .map_or(next, |at| at.min(next));
    deps.store.schedule_check(tenant, workflow_id, next).await?;
    Ok(repair)
}

async fn probe_agents<S, Q, P>(deps: &CleanupDeps<S, Q, P>, now: i64, report: &mut SweepReport)
where
    S: AgentRegistry,
    P: HealthProber,
{
    let due = match deps.store.due_health_checks(now, PROBE_LIMIT).await {
        Ok(due) => due,
        Err(error) => {
            tracing::error!(%error, "health index query failed");
            report.errors += 1;
            return;
        }
    };
    let results: Vec<Result<bool, String>> = futures::stream::iter(due)
        .map(|(tenant, agent)| async move {
            let Some(check) = agent.health_check.as_ref() else {
                return Ok(false);
            };
            let next = now + i64::from(check.interval_s) * 1000;
            let probed = match (agent.enabled, agent.endpoint().and_then(|e| check.url(e))) {
                (true, Some(url)) => {
                    let result = deps.prober.probe(&url).await;
                    let health = after_probe(agent.health.as_ref(), result, now_ms());
                    if agent.health.as_ref().map(|h| h.status) != Some(health.status) {
                        tracing::info!(tenant = %tenant, agent = %agent.name, status = health.status.as_str(), "agent health changed");
                    }
                    deps.store
                        .record_health(&tenant, &agent.name, &health, next)
                        .await
                        .map_err(|e| e.to_string())?;
                    true
                }
                // Not probed (the store hands out only enabled agents with a URL to probe, and
                // takes the others out of the index): one with a health keeps it, due again
                // only much later, so it never holds up the others.
                _ => {
                    if let Some(health) = agent.health.as_ref() {
                        deps.store
                            .record_health(&tenant, &agent.name, health, now + UNPROBED_WAIT_MS)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    false
                }
            };
            Ok(probed)
        })
        .buffer_unordered(PROBE_CONCURRENCY)
        .collect()
        .await;
    for result in results {
        match result {
            Ok(true) => report.probed += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "health not recorded; next sweep probes again");
                report.errors += 1;
            }
        }
    }
}

/// Ends the sessions whose idle time-out has passed.
async fn end_idle_sessions<S, Q, P>(deps: &CleanupDeps<S, Q, P>, now: i64, report: &mut SweepReport)
where
    S: SessionStore,
{
    let idle = match deps.store.idle_sessions(now, SESSION_LIMIT).await {
        Ok(idle) => idle,
        Err(error) => {
            tracing::error!(%error, "session index query failed");
            report.errors += 1;
            return;
        }
    };
    let ended: Vec<Result<bool, StoreError>> = futures::stream::iter(idle)
        .map(|(tenant, id)| async move {
            // The index may lag a session's last turn: end it only if it is still idle.
            match deps.store.session(&tenant, &id).await? {
                Some(session) if !session.is_expired(now) => return Ok(false),
                _ => {}
            }
            let ended = deps.store.end_session(&tenant, &id).await?;
            if ended {
                tracing::info!(tenant = %tenant, session = %id, "idle session ended");
                baton_chain::metrics::session_ended();
            }
            Ok(ended)
        })
        .buffer_unordered(SWEEP_CONCURRENCY)
        .collect()
        .await;
    for result in ended {
        match result {
            Ok(true) => report.sessions_ended += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "session not ended; the next sweep tries again");
                report.errors += 1;
            }
        }
    }
}

/// What the daily analysis needs of the store.
pub trait AnalysisStores: AnalysisStore + AnalysisSchedule {}

impl<S> AnalysisStores for S where S: AnalysisStore + AnalysisSchedule {}

/// Runs the tenants' daily self-improvement analyses that are due, while the sweep has time:
/// suggestions and patterns are written, nothing is applied.
async fn run_due_analyses<S, Q, P>(
    deps: &CleanupDeps<S, Q, P>,
    now: i64,
    until: std::time::Instant,
    report: &mut SweepReport,
) where
    S: ChainStore + AgentRegistry + AnalysisStores,
    Q: TaskQueue,
{
    let due = match deps.store.due_analyses(now, ANALYSES_PER_SWEEP).await {
        Ok(due) => due,
        Err(error) => {
            tracing::error!(%error, "analysis index query failed");
            report.errors += 1;
            return;
        }
    };
    for tenant in due {
        if std::time::Instant::now() >= until {
            break;
        }
        let advisor = improve::Advisor {
            queue: &deps.queue,
            settings: &deps.settings,
        };
        let analysis = improve::analyze(
            &deps.store,
            &advisor,
            &tenant,
            improve::DAILY_WINDOW_MS,
            now,
        );
        let next = match analysis.await {
            Ok(run) => {
                tracing::info!(%tenant, calls = run.calls, suggestions = run.written.len(), "daily analysis done");
                report.analyses += 1;
                now + improve::DAILY_WINDOW_MS
            }
            Err(error) => {
                tracing::error!(%tenant, %error, "daily analysis failed; tried again later");
                report.errors += 1;
                now + ANALYSIS_RETRY_MS
            }
        };
        if let Err(error) = deps.store.reschedule_analysis(&tenant, next).await {
            tracing::error!(%tenant, %error, "next analysis not scheduled; the next sweep runs it again");
            report.errors += 1;
        }
    }
}
