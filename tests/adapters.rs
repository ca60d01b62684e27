//! The DynamoDB and SQS adapters against the emulator: each transition is conditional and
//! idempotent, batches are split, and the learner counts each outcome once.

use baton_chain::finish::finish_at;
use baton_chain::queue::TaskQueue;
use baton_chain::store::{
    AttemptEnd, AttemptHolder, ClaimOutcome, Ended, LearningStore, NewTask, NewWorkflow, Release,
    WorkflowStore,
};
use baton_local::stack::LocalStack;
use baton_tests::*;
use baton_types::clock::now_ms;
use baton_types::ids::{TaskId, TenantId};
use baton_types::messages::{OutcomeMessage, RouteMessage, TaskRef, FORMAT_VERSION};
use baton_types::task::{AttemptOutcome, AttemptRecord};
use baton_types::task::{TaskStatus, WorkflowStatus};
use serde_json::json;

/// A checked id from a test's literal.
fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().expect("a test id is valid")
}

/// Stores the diamond a → {b, c} → d directly.
async fn store_diamond(stack: &LocalStack, id: &str) {
    let task = |name: &str, deps: &[&str], dependents: &[&str]| NewTask {
        dispatch_until_ms: None,
        id: self::id(name),
        capability: "work".into(),
        profile: Default::default(),
        input: json!({ "n": name }),
        depends_on: deps.iter().map(|d| self::id(d)).collect(),
        dependents: dependents.iter().map(|d| self::id(d)).collect(),
        status: if deps.is_empty() {
            TaskStatus::Queued
        } else {
            TaskStatus::Waiting
        },
        retry: None,
        fallback: true,
        timeout_ms: None,
    };
    let now = now_ms();
    let workflow = NewWorkflow {
        counted: true,
        tenant: "acme".parse().unwrap(),
        workflow_id: self::id(id),
        name: "diamond".into(),
        created_at_ms: now,
        dispatch_until_ms: now + 60_000,
        deadline_at_ms: None,
        check_at_ms: now + 60_000,
        tasks: vec![
            task("a", &[], &["b", "c"]),
            task("b", &["a"], &["d"]),
            task("c", &["a"], &["d"]),
            task("d", &["b", "c"], &[]),
        ],
    };
    stack
        .execute_deps()
        .store
        .create_workflow(&workflow)
        .await
        .unwrap();
}

/// The record a handler appends when it ends `attempt`.
fn entry(attempt: u32, outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        attempt,
        agent: Some(id("x")),
        started_at_ms: Some(now_ms()),
        finished_at_ms: now_ms(),
        outcome,
        error: None,
        claims: 1,
        retry_delay_ms: None,
        call_ms: None,
        usage: None,
        late: false,
    }
}

fn attempt(workflow: &str, task: &str, attempt: u32) -> TaskRef {
    TaskRef {
        tenant: "acme".parse().unwrap(),
        workflow_id: id(workflow),
        task_id: id(task),
        attempt,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_is_exclusive_to_one_attempt() {
    let stack = api_only_stack("claims").await;
    let store = &stack.execute_deps().store;
    store_diamond(&stack, "w1").await;
    let a1 = attempt("w1", "a", 1);
    let now = now_ms();

    let ClaimOutcome::Claimed(claimed) = store
        .claim_task(&a1, &id("x"), None, "token-1", now + 1000, now)
        .await
        .unwrap()
    else {
        panic!("first claim wins");
    };
    assert_eq!(claimed.status, TaskStatus::Running);
    assert_eq!(claimed.input, json!({ "n": "a" }));
    assert_eq!(claimed.dependents, vec!["b", "c"]);
    assert_eq!(claimed.claims, 1);
    assert!(
        matches!(
            store
                .claim_task(&a1, &id("x"), None, "token-1", now + 1000, now)
                .await
                .unwrap(),
            ClaimOutcome::Claimed(_)
        ),
        "a claim meeting its own token (its response was lost) is still this claim"
    );
    assert!(matches!(
        store
            .claim_task(&a1, &id("y"), None, "token-2", now + 1000, now)
            .await
            .unwrap(),
        ClaimOutcome::NotClaimable(_)
    ));
    assert!(matches!(
        store
            .claim_task(&attempt("w1", "a", 2), &id("y"), None, "t", now, now)
            .await
            .unwrap(),
        ClaimOutcome::NotClaimable(_)
    ));
    assert!(
        matches!(
            store
                .claim_task(&attempt("w1", "b", 1), &id("y"), None, "t", now, now)
                .await
                .unwrap(),
            ClaimOutcome::NotClaimable(_)
        ),
        "b still waits"
    );
    assert!(matches!(
        store
            .claim_task(&attempt("w1", "zz", 1), &id("y"), None, "t", now, now)
            .await
            .unwrap(),
        ClaimOutcome::Missing
    ));

    let finish = finish_at(&stack.settings, now_ms());
    let output = AttemptEnd::Succeeded(json!({ "ok": true }));
    let done = entry(1, AttemptOutcome::Succeeded);
    assert!(
        matches!(
            store
                .end_attempt(&a1, AttemptHolder::Claim("token-2"), &output, &done, finish)
                .await
                .unwrap(),
            Ended::Superseded
        ),
        "only the claim's holder ends the attempt"
    );
    let Ended::Now(ended) = store
        .end_attempt(&a1, AttemptHolder::Claim("token-1"), &output, &done, finish)
        .await
        .unwrap()
    else {
        panic!("the holder ends its attempt");
    };
    assert_eq!(ended.attempts, vec![done.clone()]);
    assert!(matches!(
        store
            .end_attempt(&a1, AttemptHolder::Claim("token-1"), &output, &done, finish)
            .await
            .unwrap(),
        Ended::Before(_)
    ));
    assert!(matches!(
        store
            .claim_task(&a1, &id("x"), None, "token-3", now, now)
            .await
            .unwrap(),
        ClaimOutcome::AlreadyFinished(_)
    ));
    let view = store
        .workflow(&"acme".parse().unwrap(), &id("w1"))
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<&str> = view.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a", "b", "c", "d"],
        "tasks keep their submission order"
    );
    assert_eq!(view.tasks[0].output, Some(json!({ "ok": true })));
    assert_eq!(
        view.tasks[0].lease_until_ms, None,
        "a finished task holds no lease"
    );
    assert!(
        store
            .workflow(&"other-tenant".parse().unwrap(), &id("w1"))
            .await
            .unwrap()
            .is_none(),
        "tenants are isolated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_are_released_once_and_only_by_their_last_parent() {
    let stack = api_only_stack("release").await;
    let store = &stack.execute_deps().store;
    store_diamond(&stack, "w2").await;
    let until = now_ms() + 60_000;
    assert_eq!(
        store
            .release_dependent(
                &"acme".parse().unwrap(),
                &id("w2"),
                &id("d"),
                &id("b"),
                false,
                until
            )
            .await
            .unwrap(),
        Release::StillWaiting
    );
    assert_eq!(
        store
            .release_dependent(
                &"acme".parse().unwrap(),
                &id("w2"),
                &id("d"),
                &id("b"),
                false,
                until
            )
            .await
            .unwrap(),
        Release::StillWaiting,
        "a repeated parent is not counted twice"
    );
    assert_eq!(
        store
            .release_dependent(
                &"acme".parse().unwrap(),
                &id("w2"),
                &id("d"),
                &id("c"),
                false,
                until
            )
            .await
            .unwrap(),
        Release::Ready {
            attempt: 1,
            capability: "work".into(),
            profile: Default::default(),
        }
    );
    assert_eq!(
        store
            .release_dependent(
                &"acme".parse().unwrap(),
                &id("w2"),
                &id("d"),
                &id("c"),
                false,
                until
            )
            .await
            .unwrap(),
        Release::Ready {
            attempt: 1,
            capability: "work".into(),
            profile: Default::default(),
        },
        "the releasing parent, delivered again, sends it again (it may have died before sending)"
    );
    assert_eq!(
        store
            .release_dependent(
                &"acme".parse().unwrap(),
                &id("w2"),
                &id("d"),
                &id("b"),
                false,
                until
            )
            .await
            .unwrap(),
        Release::Moved,
        "another parent does not"
    );
    // b's only parent is a: a stores it in `sole_parent_of`, and releases it in one write.
    let a = store
        .task(&"acme".parse().unwrap(), &id("w2"), &id("a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.sole_parent_of, ["b", "c"]);
    let b = store
        .task(&"acme".parse().unwrap(), &id("w2"), &id("b"))
        .await
        .unwrap()
        .unwrap();
    assert!(b.sole_parent_of.is_empty(), "d has two parents");
    for delivery in ["first", "again"] {
        let released = store
            .release_dependent(
                &"acme".parse().unwrap(),
                &id("w2"),
                &id("b"),
                &id("a"),
                true,
                until,
            )
            .await
            .unwrap();
        assert!(
            matches!(released, Release::Ready { attempt: 1, .. }),
            "{delivery}: {released:?}"
        );
    }
    let b = store
        .task(&"acme".parse().unwrap(), &id("w2"), &id("b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.status, TaskStatus::Queued);
    assert_eq!((b.deps_remaining, b.lease_until_ms), (0, Some(until)));
    assert_eq!(b.deps_done, ["a"]);
    // A claim keeps a dispatch lease that is long enough (the lease index is not rekeyed) and
    // extends one that is not.
    let claimed = store
        .claim_task(
            &b.task_ref(),
            &id("x"),
            None,
            "token-b",
            until - 1_000,
            now_ms(),
        )
        .await
        .unwrap();
    let ClaimOutcome::Claimed(b) = claimed else {
        panic!("b is claimed: {claimed:?}");
    };
    assert_eq!(
        (b.status, b.lease_until_ms),
        (TaskStatus::Running, Some(until))
    );
    let c_ref = store
        .task(&"acme".parse().unwrap(), &id("w2"), &id("c"))
        .await
        .unwrap()
        .unwrap()
        .task_ref();
    store
        .release_dependent(
            &"acme".parse().unwrap(),
            &id("w2"),
            &id("c"),
            &id("a"),
            true,
            until,
        )
        .await
        .unwrap();
    let claimed = store
        .claim_task(&c_ref, &id("x"), None, "token-c", until + 5_000, now_ms())
        .await
        .unwrap();
    let ClaimOutcome::Claimed(c) = claimed else {
        panic!("c is claimed: {claimed:?}");
    };
    assert_eq!(c.lease_until_ms, Some(until + 5_000));
    // A dispatch lease past twice the claim's own span is not kept: a dead claim is found at
    // its own lease.
    let a_ref = store
        .task(&"acme".parse().unwrap(), &id("w2"), &id("a"))
        .await
        .unwrap()
        .unwrap()
        .task_ref();
    let now = now_ms();
    let claimed = store
        .claim_task(&a_ref, &id("x"), None, "token-a", now + 10_000, now)
        .await
        .unwrap();
    let ClaimOutcome::Claimed(a) = claimed else {
        panic!("a is claimed: {claimed:?}");
    };
    assert_eq!(a.lease_until_ms, Some(now + 10_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_with_a_retry_queues_the_next_attempt_in_the_same_write() {
    let stack = api_only_stack("retry-write").await;
    let store = &stack.execute_deps().store;
    store_diamond(&stack, "w4").await;
    let a1 = attempt("w4", "a", 1);
    let now = now_ms();
    store
        .claim_task(&a1, &id("x"), None, "tk", now + 1000, now)
        .await
        .unwrap();
    let failed = AttemptRecord {
        retry_delay_ms: Some(2_000),
        ..entry(1, AttemptOutcome::Failed)
    };
    let retry = AttemptEnd::Retry {
        not_before_ms: now + 2_000,
        lease_until_ms: now + 62_000,
    };
    let finish = finish_at(&stack.settings, now);
    let Ended::Now(queued) = store
        .end_attempt(&a1, AttemptHolder::Claim("tk"), &retry, &failed, finish)
        .await
        .unwrap()
    else {
        panic!("the retry is queued");
    };
    assert_eq!(
        (queued.status, queued.attempt, queued.claims),
        (TaskStatus::Queued, 2, 0)
    );
    assert_eq!(queued.lease_until_ms, Some(now + 62_000));
    assert_eq!(queued.attempts, vec![failed.clone()]);
    assert!(queued.retries_after(1));
    // The same write again (its response lost) meets the queued retry: it is its own.
    assert!(matches!(
        store
            .end_attempt(&a1, AttemptHolder::Claim("tk"), &retry, &failed, finish)
            .await
            .unwrap(),
        Ended::Before(r) if r.attempt == 2
    ));
    // Attempt 2 ends as a success: both attempts are kept, oldest first.
    let a2 = attempt("w4", "a", 2);
    store
        .claim_task(&a2, &id("y"), None, "tk2", now + 1000, now)
        .await
        .unwrap();
    let Ended::Now(done) = store
        .end_attempt(
            &a2,
            AttemptHolder::Claim("tk2"),
            &AttemptEnd::Succeeded(json!(1)),
            &entry(2, AttemptOutcome::Succeeded),
            finish,
        )
        .await
        .unwrap()
    else {
        panic!("attempt 2 ends");
    };
    let numbers: Vec<u32> = done.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(done.status, TaskStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_is_counted_once_and_the_workflow_completes_once() {
    let stack = api_only_stack("counting").await;
    let store = &stack.execute_deps().store;
    store_diamond(&stack, "w3").await;
    let finish = finish_at(&stack.settings, now_ms());
    for task in ["a", "a", "b", "c"] {
        store
            .count_finished_task(
                &"acme".parse().unwrap(),
                &id("w3"),
                &id(task),
                false,
                finish.now_ms,
            )
            .await
            .unwrap();
    }
    assert!(
        !store
            .finish_workflow(
                &"acme".parse().unwrap(),
                &id("w3"),
                WorkflowStatus::Succeeded,
                finish
            )
            .await
            .unwrap(),
        "d is still to run"
    );
    let progress = store
        .count_finished_task(
            &"acme".parse().unwrap(),
            &id("w3"),
            &id("d"),
            false,
            finish.now_ms,
        )
        .await
        .unwrap();
    assert_eq!(progress.tasks_remaining, 0);
    assert!(!progress.failing);
    assert!(
        !store
            .finish_workflow(
                &"acme".parse().unwrap(),
                &id("w3"),
                WorkflowStatus::Failed,
                finish
            )
            .await
            .unwrap(),
        "nothing failed: it cannot finish as failed"
    );
    assert!(store
        .finish_workflow(
            &"acme".parse().unwrap(),
            &id("w3"),
            WorkflowStatus::Succeeded,
            finish
        )
        .await
        .unwrap());
    assert!(!store
        .finish_workflow(
            &"acme".parse().unwrap(),
            &id("w3"),
            WorkflowStatus::Succeeded,
            finish
        )
        .await
        .unwrap());
    let view = store
        .workflow(&"acme".parse().unwrap(), &id("w3"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.workflow.status, WorkflowStatus::Succeeded);
    assert_eq!(view.workflow.finished_at_ms, Some(finish.now_ms));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_are_learned_once_even_when_recorded_concurrently() {
    let stack = api_only_stack("outcomes").await;
    let store = &stack.learn_deps().store;
    // An attempt's outcome is built from its one stored record: a copy ends at the same time.
    let finished_at_ms = now_ms();
    let outcome = |task: &str, success: bool| OutcomeMessage {
        v: FORMAT_VERSION,
        task: attempt("w", task, 1),
        agent: id("worker"),
        task_type: "work".into(),
        success,
        latency_ms: 40,
        failure: None,
        usage: None,
        finished_at_ms,
        counts_for_circuit: true,
        breaker: None,
        details: Default::default(),
    };
    assert_eq!(
        store
            .record_outcomes(&[outcome("t0", true)], 600_000, 0)
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(
        store
            .record_outcomes(&[outcome("t0", true)], 600_000, 0)
            .await
            .unwrap(),
        [false],
        "a duplicate is not learned"
    );
    // A batch mixing a duplicate with new outcomes learns only the new ones.
    assert_eq!(
        store
            .record_outcomes(
                &[
                    outcome("t1", true),
                    outcome("t0", true),
                    outcome("t2", false)
                ],
                600_000,
                0
            )
            .await
            .unwrap(),
        [true, false, true]
    );
    let concurrent = (3..=8).map(|i| {
        let o = outcome(&format!("t{i}"), i % 2 == 0);
        async move { store.record_outcomes(&[o], 600_000, 0).await.unwrap() }
    });
    assert!(futures::future::join_all(concurrent)
        .await
        .into_iter()
        .all(|learned| learned == [true]));
    let stats = store
        .agent_stats(
            &"acme".parse().unwrap(),
            "work",
            &[id("worker"), id("nobody")],
        )
        .await
        .unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats["worker"].count, 9);
    assert_eq!(stats["worker"].successes, 5);
    assert_eq!(stats["worker"].max_latency_ms, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_messages_are_sent_in_batches_of_ten() {
    let stack = api_only_stack("batches").await;
    let messages: Vec<RouteMessage> = (0..23)
        .map(|i| {
            RouteMessage::new(
                attempt("w", &format!("t{i}"), 1),
                "work",
                Default::default(),
            )
        })
        .collect();
    stack
        .execute_deps()
        .queue
        .queues()
        .send_route(&messages)
        .await
        .unwrap();
    assert_eq!(queue_depth(&stack, "RouteQueue").await, 23);
    let received = receive_one(&stack, "RouteQueue").await;
    let decoded: RouteMessage = serde_json::from_str(received.body().unwrap()).unwrap();
    assert_eq!(decoded.capability, "work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_released_by_many_parents_at_once_is_released_exactly_once() {
    let stack = api_only_stack("join").await;
    let store = &stack.execute_deps().store;
    let parents: Vec<TaskId> = (0..30).map(|i| id(&format!("p{i}"))).collect();
    let mut tasks: Vec<NewTask> = parents
        .iter()
        .map(|p| NewTask {
            dispatch_until_ms: None,
            id: p.clone(),
            capability: "work".into(),
            profile: Default::default(),
            input: json!(null),
            depends_on: vec![],
            dependents: vec![id("join")],
            status: TaskStatus::Queued,
            retry: None,
            fallback: true,
            timeout_ms: None,
        })
        .collect();
    tasks.push(NewTask {
        dispatch_until_ms: None,
        id: id("join"),
        capability: "work".into(),
        profile: Default::default(),
        input: json!(null),
        depends_on: parents.clone(),
        dependents: vec![],
        status: TaskStatus::Waiting,
        retry: None,
        fallback: true,
        timeout_ms: None,
    });
    let now = now_ms();
    let workflow = NewWorkflow {
        counted: true,
        tenant: "acme".parse().unwrap(),
        workflow_id: "wj".parse().unwrap(),
        name: "join".into(),
        created_at_ms: now,
        dispatch_until_ms: now + 60_000,
        deadline_at_ms: None,
        check_at_ms: now + 60_000,
        tasks,
    };
    store.create_workflow(&workflow).await.unwrap();
    // Every parent reports twice, all at once.
    let releases = parents
        .iter()
        .chain(parents.iter())
        .map(|parent| async move {
            store
                .release_dependent(
                    &"acme".parse().unwrap(),
                    &id("wj"),
                    &id("join"),
                    &id(parent),
                    false,
                    now + 60_000,
                )
                .await
                .unwrap()
        });
    let releases = futures::future::join_all(releases).await;
    // Exactly one parent released it; only that parent's duplicate may report it again.
    let releasers: std::collections::BTreeSet<&TaskId> = parents
        .iter()
        .chain(parents.iter())
        .zip(&releases)
        .filter(|(_, r)| matches!(r, Release::Ready { .. }))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(releasers.len(), 1, "{releases:?}");
    let view = store
        .workflow(&"acme".parse().unwrap(), &id("wj"))
        .await
        .unwrap()
        .unwrap();
    let join = view.tasks.iter().find(|t| t.id == "join").unwrap();
    assert_eq!(join.status, TaskStatus::Queued);
    assert_eq!(join.deps_remaining, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repairs_outline_of_a_workflow_holds_no_inputs_or_outputs() {
    let stack = api_only_stack("outline").await;
    store_diamond(&stack, "w-outline").await;
    let store = &stack.execute_deps().store;
    let whole = store
        .workflow(&"acme".parse().unwrap(), &id("w-outline"))
        .await
        .unwrap()
        .unwrap();
    assert!(whole.tasks.iter().all(|t| t.input.is_object()));
    let outline = store
        .workflow_outline(&"acme".parse().unwrap(), &id("w-outline"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outline.workflow, whole.workflow);
    assert_eq!(outline.tasks.len(), 4);
    for (thin, full) in outline.tasks.iter().zip(&whole.tasks) {
        assert!(thin.input.is_null() && thin.output.is_none(), "{thin:?}");
        // Everything the repair decides on is there.
        assert_eq!(
            (&thin.id, thin.status, &thin.dependents, &thin.deps_done),
            (&full.id, full.status, &full.dependents, &full.deps_done)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_workflows_are_counted_under_their_tenant_until_they_finish() {
    use baton_chain::store::AdmissionStore;
    let stack = api_only_stack("running").await;
    let store = &stack.execute_deps().store;
    store_diamond(&stack, "w-running-1").await;
    store_diamond(&stack, "w-running-2").await;
    assert_eq!(
        eventually("both are counted", || async {
            let n = store
                .running_count(&"acme".parse().unwrap(), 100)
                .await
                .unwrap();
            (n == 2).then_some(n)
        })
        .await,
        2
    );
    assert!(
        store
            .running_count(&"acme".parse().unwrap(), 1)
            .await
            .unwrap()
            >= 1
    );
    assert_eq!(
        store
            .running_count(&"globex".parse().unwrap(), 100)
            .await
            .unwrap(),
        0
    );
    // Finishing takes it out of the index.
    let finish = finish_at(&stack.settings, now_ms());
    for task in ["a", "b", "c", "d"] {
        store
            .count_finished_task(
                &"acme".parse().unwrap(),
                &id("w-running-1"),
                &id(task),
                false,
                now_ms(),
            )
            .await
            .unwrap();
    }
    assert!(store
        .finish_workflow(
            &"acme".parse().unwrap(),
            &id("w-running-1"),
            WorkflowStatus::Succeeded,
            finish
        )
        .await
        .unwrap());
    eventually("one is left", || async {
        (store
            .running_count(&"acme".parse().unwrap(), 100)
            .await
            .unwrap()
            == 1)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submissions_of_one_tenant_never_lose_each_others_tasks() {
    use baton_chain::store::{AdmissionStore, PaceAdvance};
    use baton_types::quota::{PaceStep, Quotas};
    let stack = api_only_stack("pace").await;
    let store = stack.execute_deps().store.clone();
    let quotas = Quotas {
        tasks_per_second: 1_000.0,
        task_burst: 10,
        task_backlog: 1_000_000,
        ..Quotas::default()
    };
    let now = now_ms();
    // Twenty submissions of five tasks at once, all at the same instant.
    let advances = futures::future::join_all((0..20).map(|_| {
        let store = store.clone();
        async move {
            let step = PaceStep::new(&quotas, 5, now);
            match store
                .advance_pace(&"acme".parse().unwrap(), &step)
                .await
                .unwrap()
            {
                PaceAdvance::Advanced { base_us, .. } => (base_us, step.turns_ms(base_us)),
                PaceAdvance::Refused { .. } => panic!("within the backlog"),
            }
        }
    }))
    .await;
    // Every submission got turns of its own: no two share a base, and together they hold
    // the hundred turns of a hundred tasks at the pace (10 of them in the burst).
    let mut bases: Vec<i64> = advances.iter().map(|(base, _)| *base).collect();
    bases.sort_unstable();
    bases.dedup();
    assert_eq!(bases.len(), 20);
    let mut turns: Vec<i64> = advances.into_iter().flat_map(|(_, t)| t).collect();
    turns.sort_unstable();
    let step = PaceStep::new(&quotas, 100, now);
    assert_eq!(turns, step.turns_ms(step.floor_us));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_daily_analysis_is_scheduled_once_found_when_due_and_moved_on() {
    use baton_chain::store::AnalysisSchedule;
    let stack = api_only_stack("analyses").await;
    let store = &stack.execute_deps().store;
    let (acme, other) = (id("acme"), id("other"));
    store.schedule_analysis(&acme, 1_000).await.unwrap();
    store.schedule_analysis(&acme, 9_000).await.unwrap();
    store.schedule_analysis(&other, 5_000).await.unwrap();
    assert_eq!(
        store.due_analyses(2_000, 10).await.unwrap(),
        vec![acme.clone()],
        "kept its first time"
    );
    assert_eq!(
        store.due_analyses(6_000, 10).await.unwrap(),
        [acme.clone(), other.clone()]
    );
    assert_eq!(
        store.due_analyses(6_000, 1).await.unwrap(),
        vec![acme.clone()],
        "the longest due first"
    );
    store.reschedule_analysis(&acme, 100_000).await.unwrap();
    assert_eq!(store.due_analyses(6_000, 10).await.unwrap(), [other]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_stream_slots_are_taken_freed_and_lapse() {
    use baton_chain::store::StreamSlots;
    let stack = api_only_stack("stream-slots").await;
    let store = &stack.execute_deps().store;
    let (tenant, other): (TenantId, TenantId) = ("acme".parse().unwrap(), "other".parse().unwrap());
    let take = |tenant: &TenantId, id: &'static str, now: i64| {
        let tenant = tenant.clone();
        async move {
            store
                .take_stream_slot(&tenant, id, 2, now, now + 1_000)
                .await
                .unwrap()
        }
    };
    assert!(take(&tenant, "a", 0).await);
    assert!(take(&tenant, "b", 0).await);
    assert!(!take(&tenant, "c", 0).await, "two are held");
    assert!(take(&other, "c", 0).await, "another tenant's are its own");
    assert!(take(&tenant, "a", 10).await, "a held slot renews");
    store.free_stream_slot(&tenant, "a").await.unwrap();
    store.free_stream_slot(&tenant, "a").await.unwrap();
    assert!(take(&tenant, "c", 20).await);
    assert!(!take(&tenant, "d", 20).await);
    // b and c lapse at 1,000 and 1,020: a slot never freed frees itself.
    assert!(take(&tenant, "d", 1_500).await);
}
