//! cleanup's sweep on the memory store: leases, repairs, deadlines, health and idle sessions,
//! each safe to run again.

use baton_chain::memory::fixtures::{
    agent_name, conclude_on, id, seed, settings, task_ref, tenant, workflow, AnsweringProber,
    AGENT, DISPATCH_MS,
};
use baton_chain::memory::{Fault, MemoryQueue, MemoryStore};
use baton_chain::store::{AgentRegistry, ClaimOutcome, SessionStore, WorkflowStore};
use baton_cleanup::{sweep, CleanupDeps, SweepReport};
use baton_types::health::HealthCheck;
use baton_types::outcome::FailureKind;
use baton_types::session::Session;
use baton_types::task::{TaskStatus, WorkflowStatus};
use serde_json::json;

type Deps = CleanupDeps<MemoryStore, MemoryQueue, AnsweringProber>;

const CHAIN: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"])];
/// When the fixture workflows are created.
const START: i64 = 1_000_000;

async fn deps_with_workflow() -> Deps {
    let deps = CleanupDeps {
        store: MemoryStore::new(),
        queue: MemoryQueue::new(),
        prober: AnsweringProber::default(),
        settings: settings(),
    };
    seed(&deps.store, "w", CHAIN, START).await;
    deps
}

async fn claim_a(deps: &Deps, lease_until_ms: i64) {
    let a = deps.store.stored_task("w", "a").await;
    let claim = deps
        .store
        .claim_task(
            &a.task_ref(),
            &agent_name(),
            None,
            "dead handler",
            lease_until_ms,
            START,
        )
        .await
        .unwrap();
    assert!(matches!(claim, ClaimOutcome::Claimed(_)));
}

#[tokio::test]
async fn an_attempt_whose_handler_died_goes_back_to_routing_as_the_same_attempt() {
    let deps = deps_with_workflow().await;
    claim_a(&deps, START + 10_000).await;
    let report = sweep(&deps, START + 20_000).await;
    assert_eq!(
        report,
        SweepReport {
            reclaimed: 1,
            ..SweepReport::default()
        }
    );
    let a = deps.store.stored_task("w", "a").await;
    assert_eq!(
        (a.status, a.attempt, a.lease_expirations),
        (TaskStatus::Queued, 1, 1)
    );
    let sent = deps.queue.drain_route();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].0.task.clone(), sent[0].0.prefer.clone()),
        (task_ref("w", "a", 1), vec![agent_name()])
    );
    assert_eq!(
        sweep(&deps, START + 20_000).await,
        SweepReport::default(),
        "once"
    );
}

#[tokio::test]
async fn a_task_whose_handlers_keep_dying_fails_lease_expired() {
    let deps = deps_with_workflow().await;
    let mut now = START;
    for _ in 0..deps.settings.max_lease_attempts {
        claim_a(&deps, now + 1).await;
        now += 2;
        sweep(&deps, now).await;
    }
    let view = deps.store.stored_view("w").await;
    let a = &view.tasks[0];
    assert_eq!(a.status, TaskStatus::Failed);
    assert_eq!(
        a.failure.as_ref().map(|f| f.kind),
        Some(FailureKind::LeaseExpired)
    );
    assert_eq!(view.tasks[1].status, TaskStatus::Skipped);
    assert_eq!(view.workflow.status, WorkflowStatus::Failed);
}

#[tokio::test]
async fn a_queued_task_nobody_took_is_sent_again_even_when_a_requeue_response_was_lost() {
    let deps = deps_with_workflow().await;
    deps.store.inject("requeue_expired", Fault::LoseResponse, 1);
    let first = START + DISPATCH_MS + 1;
    assert_eq!(sweep(&deps, first).await.errors, 1);
    assert!(
        deps.queue.drain_route().is_empty(),
        "the send never happened"
    );
    // The lease the lost write set runs out in turn: the next sweep after it sends the task.
    let a = deps.store.stored_task("w", "a").await;
    let report = sweep(&deps, a.lease_until_ms.unwrap() + 1).await;
    assert_eq!(report.redispatched, 1);
    let sent = deps.queue.drain_route();
    assert_eq!((sent.len(), sent[0].0.dispatch), (1, 2));
}

#[tokio::test]
async fn the_repair_runs_a_follow_up_that_was_cut_short() {
    let deps = deps_with_workflow().await;
    claim_a(&deps, START + 10_000).await;
    deps.store.inject("count_finished_task", Fault::Fail, 1);
    let a = task_ref("w", "a", 1);
    let ended = conclude_on(
        &deps.store,
        &deps.queue,
        &a,
        "dead handler",
        Ok(json!(1)),
        START,
    )
    .await;
    assert!(
        ended.is_err(),
        "the handler stopped after the end was written"
    );
    let later = START + 400_000;
    let report = sweep(&deps, later).await;
    assert_eq!((report.workflows_checked, report.repaired), (1, 1));
    let view = deps.store.stored_view("w").await;
    assert_eq!(view.workflow.tasks_done, ["a"]);
    assert_eq!(view.tasks[1].status, TaskStatus::Queued);
    let sent: Vec<_> = deps
        .queue
        .drain_route()
        .into_iter()
        .map(|(m, _)| m.task)
        .collect();
    assert_eq!(sent, [task_ref("w", "b", 1)]);
    assert_eq!(
        sweep(&deps, later).await,
        SweepReport::default(),
        "checked again only later"
    );
}

#[tokio::test]
async fn a_workflow_past_its_deadline_fails_with_its_unfinished_tasks_cancelled() {
    let deps = deps_with_workflow().await;
    let mut late = workflow("late", CHAIN, START);
    late.deadline_at_ms = Some(START + 30_000);
    late.check_at_ms = START + 30_000;
    deps.store.create_workflow(&late).await.unwrap();
    let report = sweep(&deps, START + 40_000).await;
    assert_eq!(report.deadlines, 1);
    let view = deps.store.stored_view("late").await;
    assert!(view.tasks.iter().all(|t| t.status == TaskStatus::Cancelled));
    let w = view.workflow;
    assert_eq!(w.status, WorkflowStatus::Failed);
    assert_eq!(w.error.map(|e| e.kind), Some(FailureKind::DeadlineExceeded));
}

#[tokio::test]
async fn a_due_health_check_is_probed_and_recorded_once_per_interval() {
    let deps = deps_with_workflow().await;
    let mut agent = deps
        .store
        .agent(&tenant(), &agent_name())
        .await
        .unwrap()
        .unwrap();
    agent.health_check = Some(HealthCheck {
        path: "/health".into(),
        interval_s: 60,
    });
    deps.store.replace_agent(&tenant(), &agent).await.unwrap();
    assert_eq!(sweep(&deps, START).await.probed, 1);
    assert_eq!(
        sweep(&deps, START + 30_000).await.probed,
        0,
        "not due again yet"
    );
    let agent = deps
        .store
        .agent(&tenant(), &agent_name())
        .await
        .unwrap()
        .unwrap();
    assert!(agent.health.is_some());
    assert_eq!(deps.prober.probes(), 1);
}

#[tokio::test]
async fn an_idle_session_is_ended_with_everything_it_held() {
    let deps = deps_with_workflow().await;
    let session = Session {
        id: id("s"),
        agents: vec![AGENT.into()],
        metadata: json!({}),
        idle_timeout_s: 60,
        created_at_ms: START,
        last_active_at_ms: START,
        turns: 0,
        active_turn: None,
        state: Default::default(),
        history_turns: 10,
        generation: Some("g1".into()),
    };
    deps.store
        .create_session(&tenant(), &session)
        .await
        .unwrap();
    assert_eq!(sweep(&deps, START + 30_000).await.sessions_ended, 0);
    assert_eq!(sweep(&deps, START + 61_000).await.sessions_ended, 1);
    assert_eq!(deps.store.session(&tenant(), &id("s")).await.unwrap(), None);
    assert_eq!(sweep(&deps, START + 62_000).await.sessions_ended, 0);
}

#[tokio::test]
async fn a_due_daily_analysis_runs_once_writes_suggestions_and_comes_back_a_day_later() {
    use baton_chain::memory::fixtures::CAPABILITY;
    use baton_chain::store::{AnalysisSchedule, ImprovementStore, LearningStore};
    use baton_types::messages::{OutcomeMessage, FORMAT_VERSION};
    use baton_types::results::CallDetails;

    let deps = deps_with_workflow().await;
    let now = START + 3_600_000;
    // The only agent of its capability, called a dozen times in the last day.
    let outcomes: Vec<OutcomeMessage> = (0..12)
        .map(|i| OutcomeMessage {
            v: FORMAT_VERSION,
            task: task_ref(&format!("w{i}"), "a", 1),
            agent: agent_name(),
            task_type: CAPABILITY.into(),
            success: true,
            latency_ms: 100,
            failure: None,
            usage: None,
            finished_at_ms: now - 60_000 + i,
            counts_for_circuit: true,
            breaker: None,
            details: CallDetails {
                capability: CAPABILITY.into(),
                ..CallDetails::default()
            },
        })
        .collect();
    deps.store
        .record_outcomes(&outcomes, 600_000, 0)
        .await
        .unwrap();
    deps.store
        .schedule_analysis(&tenant(), now - 1)
        .await
        .unwrap();

    let report = sweep(&deps, now).await;
    assert_eq!(report.analyses, 1, "{report:?}");
    let suggestions = deps.store.suggestions(&tenant()).await.unwrap();
    assert!(
        suggestions
            .iter()
            .any(|s| s.suggestion.rule == "add_fallback"),
        "{suggestions:#?}"
    );
    // Applied by nobody: the agent is as it was.
    let agent = deps
        .store
        .agent(&tenant(), &agent_name())
        .await
        .unwrap()
        .unwrap();
    assert!(agent.enabled);

    assert_eq!(
        sweep(&deps, now + 1).await.analyses,
        0,
        "not due again at once"
    );
    let next_day = now + 24 * 3_600_000 + 1;
    assert_eq!(
        deps.store.due_analyses(next_day, 10).await.unwrap(),
        [tenant()],
        "due again a day later"
    );
}
