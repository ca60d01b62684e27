//! What follows a task's final end, whoever ended it (execute-agent after calling the agent,
//! route when no agent can take the task, cleanup when leases ran out, a control): count the
//! task on its workflow, release or skip its dependents, and finish the workflow once every
//! task has ended. The last step of the chain: it calls only the turn step ([`crate::turn`]) and
//! the analyst's ([`crate::improve`]).
//!
//! Every step is a conditional write, so a redelivered message, or the scheduled repair that
//! trusts no message, can run this again from the start: only the steps that did not happen
//! yet take effect.

use baton_types::ids::{TaskId, TenantId, WorkflowId};
use futures::future::join_all;
use serde_json::Value;

use crate::config::Settings;
use crate::error::ChainError;
use crate::payload::MAX_PAYLOAD_BYTES;
use crate::queue::TaskQueue;
use crate::store::{ChainStore, Finish, Release, StoreError, WorkflowProgress, WorkflowStore};
use baton_types::messages::{RouteMessage, TaskRef};
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::records::{TaskRecord, WorkflowView};
use baton_types::task::TaskStatus;

/// The size of a value as stored JSON.
pub fn stored_bytes(value: &Value) -> usize {
    serde_json::to_string(value).map_or(usize::MAX, |text| text.len())
}

pub(crate) fn output_too_large(bytes: usize) -> TaskFailure {
    TaskFailure::new(
        FailureKind::OutputTooLarge,
        format!(
            "the output is {bytes} bytes as stored JSON; a task's output may be at most \
             {MAX_PAYLOAD_BYTES} bytes"
        ),
    )
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

pub(crate) fn dispatch_timeout_ms(settings: &Settings) -> i64 {
    settings.dispatch_timeout.as_millis() as i64
}

/// Runs the steps after `record`'s task ended (succeeded, failed, skipped or cancelled):
/// count it on its workflow, release or skip its dependents, finish the workflow.
pub async fn complete_task<S, Q>(
    store: &S,
    queue: &Q,
    settings: &Settings,
    record: &TaskRecord,
    now_ms: i64,
) -> Result<WorkflowProgress, ChainError>
where
    S: ChainStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    // Before the task is counted: a count proves this step ran (the repair goes by counts).
    crate::turn::on_task_ended(store, record, now_ms).await?;
    crate::improve::on_task_ended(store, record, now_ms).await?;
    let finish = finish_at(settings, now_ms);
    let (tenant, workflow_id) = (&record.tenant, &record.workflow_id);
    let progress = count_task(
        store,
        tenant,
        workflow_id,
        &record.id,
        record.status == TaskStatus::Failed,
        finish,
    )
    .await?;
    if progress.cancelling {
        // The cancel cancels what has not started (`control::reconcile`); nothing is released.
        return Ok(progress);
    }
    if record.status != TaskStatus::Succeeded || progress.failing {
        // Nothing new starts in a workflow that will fail.
        skip_descendants(store, tenant, workflow_id, &record.dependents, finish).await?;
        return Ok(progress);
    }

    let dispatch_until = now_ms + dispatch_timeout_ms(settings);
    // Fan-out DAGs can have many dependents: release them a few at a time, not one by one.
    let mut ready = Vec::new();
    for chunk in record.dependents.chunks(RELEASE_CONCURRENCY) {
        let released = join_all(chunk.iter().map(|dependent| {
            let sole = record.sole_parent_of.contains(dependent);
            store.release_dependent(
                tenant,
                workflow_id,
                dependent,
                &record.id,
                sole,
                dispatch_until,
            )
        }))
        .await;
        for (dependent, release) in chunk.iter().zip(released) {
            if let Release::Ready {
                attempt,
                capability,
                profile,
            } = release?
            {
                tracing::info!(dependent = %dependent, "dependent released");
                let task = TaskRef {
                    tenant: tenant.clone(),
                    workflow_id: workflow_id.clone(),
                    task_id: dependent.clone(),
                    attempt,
                };
                if let Some(turn) = profile.paced_until_ms.filter(|at| *at > now_ms) {
                    // Its turn at the tenant's pace comes after its release: the dispatch
                    // lease follows the turn, so the sweep does not take it for lost.
                    let until = turn + dispatch_timeout_ms(settings);
                    store.extend_dispatch(&task, 0, until).await?;
                }
                ready.push(RouteMessage::new(task, capability, *profile));
            }
        }
    }
    queue.send_route(&ready).await?;
    Ok(progress)
}

/// Counts one ended task on its workflow, and finishes the workflow if it was the last.
async fn count_task<S>(
    store: &S,
    tenant: &TenantId,
    workflow_id: &WorkflowId,
    task_id: &TaskId,
    failed: bool,
    finish: Finish,
) -> Result<WorkflowProgress, StoreError>
where
    S: WorkflowStore + ?Sized,
{
    let progress = store
        .count_finished_task(tenant, workflow_id, task_id, failed, finish.now_ms)
        .await?;
    tracing::debug!(
        task = %task_id,
        tasks_remaining = progress.tasks_remaining,
        failing = progress.failing,
        "task counted on its workflow"
    );
    if progress.tasks_remaining == 0
        && store
            .finish_workflow(tenant, workflow_id, progress.outcome(), finish)
            .await?
    {
        tracing::info!(
            workflow = %workflow_id,
            status = %progress.outcome(),
            "workflow finished"
        );
        crate::metrics::workflow_finished(workflow_id, progress.outcome(), finish.now_ms);
    }
    Ok(progress)
}

/// Marks every task downstream of `dependents` skipped, and counts each on the workflow. Each
/// task is visited once, whatever the number of paths that lead to it: the walk is linear in
/// the tasks and edges below (a chain of diamonds has twice as many paths per diamond).
async fn skip_descendants<S>(
    store: &S,
    tenant: &TenantId,
    workflow_id: &WorkflowId,
    dependents: &[TaskId],
    finish: Finish,
) -> Result<(), StoreError>
where
    S: WorkflowStore + ?Sized,
{
    let mut visited: std::collections::HashSet<TaskId> = dependents.iter().cloned().collect();
    let mut frontier = dependents.to_vec();
    while let Some(task_id) = frontier.pop() {
        if let Some(next) = store
            .skip_task(tenant, workflow_id, &task_id, finish)
            .await?
        {
            count_task(store, tenant, workflow_id, &task_id, false, finish).await?;
            frontier.extend(next.into_iter().filter(|d| visited.insert(d.clone())));
        }
    }
    Ok(())
}

/// Whether an ended task's follow-up may not have run to its end, judged from what is
/// stored: the task is not counted on its workflow, or a dependent still waits on it.
pub fn follow_up_incomplete(view: &WorkflowView, task: &TaskRecord) -> bool {
    if !task.status.is_terminal() {
        return false;
    }
    // Waiting to be reset by a redrive cut short, not to be counted.
    if task.drive < view.workflow.drive && task.status != TaskStatus::Succeeded {
        return false;
    }
    if !view.workflow.tasks_done.contains(&task.id) {
        return true;
    }
    let releases = task.status == TaskStatus::Succeeded
        && !view.workflow.is_failing()
        && !view.workflow.is_cancelling();
    task.dependents.iter().any(|id| {
        view.tasks.iter().any(|d| {
            &d.id == id
                && d.status == TaskStatus::Waiting
                // A dependent must be skipped, or must have counted this task, and be queued
                // once every dependency has been counted.
                && (!releases || !d.deps_done.contains(&task.id) || d.deps_remaining == 0)
        })
    })
}

/// Finishes a workflow whose tasks have all been counted (its finishing write was lost).
pub async fn finish_if_done<S>(
    store: &S,
    settings: &Settings,
    view: &WorkflowView,
    now_ms: i64,
) -> Result<bool, StoreError>
where
    S: WorkflowStore + ?Sized,
{
    let w = &view.workflow;
    if w.status.is_terminal() || w.tasks_remaining != 0 {
        return Ok(false);
    }
    let finished = store
        .finish_workflow(&w.tenant, &w.id, w.outcome(), finish_at(settings, now_ms))
        .await?;
    if finished {
        crate::metrics::workflow_finished(&w.id, w.outcome(), now_ms);
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_types::task::WorkflowStatus;

    /// An ended task (finished at 0) with these dependents, from the graph tests' fixture.
    fn task(id: &str, status: TaskStatus, dependents: &[&str]) -> TaskRecord {
        TaskRecord {
            dependents: dependents.iter().map(|d| d.parse().unwrap()).collect(),
            sole_parent_of: Vec::new(),
            finished_at_ms: Some(0),
            ..baton_types::records::fixtures::task(id, &[], status, None)
        }
    }

    /// A running workflow that counted `done` and maybe failed.
    fn view(tasks: Vec<TaskRecord>, done: &[&str], failed_task: Option<&str>) -> WorkflowView {
        let mut view = baton_types::records::fixtures::view(tasks);
        let w = &mut view.workflow;
        w.status = WorkflowStatus::Running;
        w.tasks_remaining = w.task_count - done.len() as u32;
        w.tasks_done = done.iter().map(|d| d.parse().unwrap()).collect();
        w.failed_task = failed_task.map(|t| t.parse().unwrap());
        w.finished_at_ms = None;
        view
    }

    #[test]
    fn an_uncounted_ended_task_needs_its_follow_up() {
        let v = view(vec![task("a", TaskStatus::Succeeded, &[])], &[], None);
        assert!(follow_up_incomplete(&v, &v.tasks[0]));
        let v = view(vec![task("a", TaskStatus::Running, &[])], &[], None);
        assert!(
            !follow_up_incomplete(&v, &v.tasks[0]),
            "a running task has a lease"
        );
    }

    #[test]
    fn a_counted_task_whose_dependent_still_waits_on_it_needs_its_follow_up() {
        let mut b = task("b", TaskStatus::Waiting, &[]);
        b.deps_remaining = 1;
        let v = view(
            vec![task("a", TaskStatus::Succeeded, &["b"]), b.clone()],
            &["a"],
            None,
        );
        assert!(follow_up_incomplete(&v, &v.tasks[0]), "b never counted a");

        b.deps_done = vec!["a".parse().unwrap()];
        b.deps_remaining = 0;
        let v = view(
            vec![task("a", TaskStatus::Succeeded, &["b"]), b.clone()],
            &["a"],
            None,
        );
        assert!(
            follow_up_incomplete(&v, &v.tasks[0]),
            "b counted a but was never queued"
        );

        b.status = TaskStatus::Queued;
        let v = view(
            vec![task("a", TaskStatus::Succeeded, &["b"]), b],
            &["a"],
            None,
        );
        assert!(!follow_up_incomplete(&v, &v.tasks[0]));
    }

    #[test]
    fn in_a_failing_workflow_waiting_dependents_are_left_to_be_skipped() {
        let mut b = task("b", TaskStatus::Waiting, &[]);
        b.deps_done = vec!["a".parse().unwrap()];
        b.deps_remaining = 1;
        let v = view(
            vec![
                task("a", TaskStatus::Succeeded, &["b"]),
                b,
                task("x", TaskStatus::Failed, &[]),
            ],
            &["a", "x"],
            Some("x"),
        );
        assert!(follow_up_incomplete(&v, &v.tasks[0]));
        assert!(!follow_up_incomplete(&v, &v.tasks[2]));
    }
}

/// The follow-up of a final end, run on the memory store.
#[cfg(test)]
mod on_the_memory_store {
    use super::*;
    use crate::memory::fixtures::{final_failure, Harness};
    use crate::memory::Fault;
    use baton_types::task::WorkflowStatus;
    use serde_json::json;

    const DIAMOND: &[(&str, &[&str])] =
        &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])];

    #[tokio::test]
    async fn a_diamond_releases_its_join_once_both_sides_succeeded() {
        let h = Harness::with_workflow("w", DIAMOND, 1_000).await;
        h.run("w", "a", Ok(json!(1)), 2_000).await;
        assert_eq!(h.routed(), ["b", "c"]);
        h.run("w", "b", Ok(json!(2)), 3_000).await;
        assert!(h.routed().is_empty(), "d still waits for c");
        assert_eq!(h.task("w", "d").await.deps_remaining, 1);
        h.run("w", "c", Ok(json!(3)), 4_000).await;
        assert_eq!(h.routed(), ["d"]);
        let d = h.task("w", "d").await;
        assert_eq!(
            (d.status, d.lease_until_ms.is_some()),
            (TaskStatus::Queued, true)
        );
        h.run("w", "d", Ok(json!(4)), 5_000).await;
        let w = h.view("w").await.workflow;
        assert_eq!(
            (w.status, w.tasks_remaining),
            (WorkflowStatus::Succeeded, 0)
        );
        assert_eq!(w.finished_at_ms, Some(5_000));
    }

    #[tokio::test]
    async fn a_follow_up_run_again_counts_and_releases_nothing_twice() {
        let h = Harness::with_workflow("w", DIAMOND, 1_000).await;
        h.run("w", "a", Ok(json!(1)), 2_000).await;
        h.routed();
        let a = h.task("w", "a").await;
        complete_task(&h.store, &h.queue, &h.settings, &a, 2_500)
            .await
            .unwrap();
        let view = h.view("w").await;
        assert_eq!(view.workflow.tasks_remaining, 3, "a is counted once");
        for dependent in ["b", "c"] {
            let t = h.task("w", dependent).await;
            assert_eq!((t.deps_done.len(), t.deps_remaining), (1, 0));
        }
        // The parent that queued them sends them again: the claim absorbs the copy.
        assert_eq!(h.routed(), ["b", "c"]);
    }

    #[tokio::test]
    async fn a_failure_skips_every_descendant_and_fails_the_workflow() {
        let h = Harness::with_workflow("w", DIAMOND, 1_000).await;
        h.run("w", "a", Err(final_failure()), 2_000).await;
        assert!(h.routed().is_empty(), "nothing new starts");
        let view = h.view("w").await;
        for t in &view.tasks[1..] {
            assert_eq!(t.status, TaskStatus::Skipped, "{}", t.id);
        }
        let w = &view.workflow;
        assert_eq!(w.status, WorkflowStatus::Failed);
        assert_eq!(
            (w.tasks_remaining, w.failed_task.as_deref()),
            (0, Some("a"))
        );
    }

    #[tokio::test]
    async fn a_lost_release_response_still_sends_the_dependent_once_queued() {
        let h = Harness::with_workflow("w", &[("a", &[]), ("b", &["a"])], 1_000).await;
        h.store.inject("release_dependent", Fault::Retried, 1);
        h.run("w", "a", Ok(json!(1)), 2_000).await;
        assert_eq!(h.routed(), ["b"]);
        let b = h.task("w", "b").await;
        assert_eq!(
            (b.status, b.deps_done.clone()),
            (TaskStatus::Queued, vec!["a".parse().unwrap()])
        );
    }

    #[tokio::test]
    async fn finish_if_done_finishes_a_workflow_whose_finishing_write_failed_once() {
        let h = Harness::with_workflow("w", &[("a", &[])], 1_000).await;
        h.store.inject("finish_workflow", Fault::Fail, 1);
        let a = h.claim("w", "a", "tok", 2_000).await;
        let concluded = h.try_conclude(&a, "tok", Ok(json!(1)), 2_000).await;
        assert!(concluded.is_err(), "the finishing write failed");
        let view = h.view("w").await;
        assert_eq!(
            (view.workflow.status, view.workflow.tasks_remaining),
            (WorkflowStatus::Running, 0)
        );
        assert!(finish_if_done(&h.store, &h.settings, &view, 3_000)
            .await
            .unwrap());
        let done = h.view("w").await;
        assert_eq!(done.workflow.status, WorkflowStatus::Succeeded);
        assert!(!finish_if_done(&h.store, &h.settings, &done, 4_000)
            .await
            .unwrap());
        assert!(
            !finish_if_done(&h.store, &h.settings, &view, 4_000)
                .await
                .unwrap(),
            "a stale view finishes nothing"
        );
        assert_eq!(h.view("w").await.workflow.finished_at_ms, Some(3_000));
    }
}
