//! The DynamoDB and SQS adapters against the emulator: each transition is conditional and
//! idempotent, batches are split, and the learner counts each outcome once.

use baton::clock::now_ms;
use baton::completion::finish_at;
use baton::domain::task::{TaskStatus, WorkflowStatus};
use baton::messages::{OutcomeMessage, RouteMessage, TaskRef, FORMAT_VERSION};
use baton::queue::TaskQueue;
use baton::store::{
    ClaimOutcome, LearningStore, NewTask, NewWorkflow, Recorded, Release, TaskResult, WorkflowStore,
};
use baton_local::stack::LocalStack;
use baton_tests::*;
use serde_json::json;

/// Stores the diamond a → {b, c} → d directly.
async fn store_diamond(stack: &LocalStack, id: &str) {
    let task = |name: &str, deps: &[&str], dependents: &[&str]| NewTask {
        id: name.into(),
        capability: "work".into(),
        input: json!({ "n": name }),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        dependents: dependents.iter().map(|d| d.to_string()).collect(),
        status: if deps.is_empty() {
            TaskStatus::Queued
        } else {
            TaskStatus::Waiting
        },
    };
    let now = now_ms();
    let workflow = NewWorkflow {
        tenant: "acme".into(),
        workflow_id: id.into(),
        name: "diamond".into(),
        created_at_ms: now,
        dispatch_until_ms: now + 60_000,
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

fn attempt(workflow: &str, task: &str, attempt: u32) -> TaskRef {
    TaskRef {
        tenant: "acme".into(),
        workflow_id: workflow.into(),
        task_id: task.into(),
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

    let ClaimOutcome::Claimed(claimed) = store.claim_task(&a1, "x", now + 1000, now).await.unwrap()
    else {
        panic!("first claim wins");
    };
    assert_eq!(claimed.status, TaskStatus::Running);
    assert_eq!(claimed.input, json!({ "n": "a" }));
    assert_eq!(claimed.dependents, vec!["b", "c"]);
    assert!(matches!(
        store.claim_task(&a1, "y", now + 1000, now).await.unwrap(),
        ClaimOutcome::NotClaimable(_)
    ));
    assert!(matches!(
        store
            .claim_task(&attempt("w1", "a", 2), "y", now, now)
            .await
            .unwrap(),
        ClaimOutcome::NotClaimable(_)
    ));
    assert!(
        matches!(
            store
                .claim_task(&attempt("w1", "b", 1), "y", now, now)
                .await
                .unwrap(),
            ClaimOutcome::NotClaimable(_)
        ),
        "b still waits"
    );
    assert!(matches!(
        store
            .claim_task(&attempt("w1", "zz", 1), "y", now, now)
            .await
            .unwrap(),
        ClaimOutcome::Missing
    ));

    let finish = finish_at(&stack.settings, now_ms());
    let output = TaskResult::Succeeded(json!({ "ok": true }));
    assert!(matches!(
        store
            .record_result(&a1, TaskStatus::Running, &output, finish)
            .await
            .unwrap(),
        Recorded::Now(_)
    ));
    assert!(matches!(
        store
            .record_result(&a1, TaskStatus::Running, &output, finish)
            .await
            .unwrap(),
        Recorded::Earlier(_)
    ));
    assert!(matches!(
        store.claim_task(&a1, "x", now, now).await.unwrap(),
        ClaimOutcome::AlreadyFinished(_)
    ));
    let view = store.workflow("acme", "w1").await.unwrap().unwrap();
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
            .workflow("other-tenant", "w1")
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
            .release_dependent("acme", "w2", "d", "b", until)
            .await
            .unwrap(),
        Release::StillWaiting
    );
    assert_eq!(
        store
            .release_dependent("acme", "w2", "d", "b", until)
            .await
            .unwrap(),
        Release::StillWaiting,
        "a repeated parent is not counted twice"
    );
    assert_eq!(
        store
            .release_dependent("acme", "w2", "d", "c", until)
            .await
            .unwrap(),
        Release::Ready {
            attempt: 1,
            capability: "work".into()
        }
    );
    assert_eq!(
        store
            .release_dependent("acme", "w2", "d", "c", until)
            .await
            .unwrap(),
        Release::Moved
    );
    assert_eq!(
        store
            .release_dependent("acme", "w2", "d", "b", until)
            .await
            .unwrap(),
        Release::Moved
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_is_counted_once_and_the_workflow_completes_once() {
    let stack = api_only_stack("counting").await;
    let store = &stack.execute_deps().store;
    store_diamond(&stack, "w3").await;
    let finish = finish_at(&stack.settings, now_ms());
    for task in ["a", "a", "b", "c"] {
        store
            .count_finished_task("acme", "w3", task, None, finish)
            .await
            .unwrap();
    }
    assert!(
        !store.complete_workflow("acme", "w3", finish).await.unwrap(),
        "d is still to run"
    );
    let progress = store
        .count_finished_task("acme", "w3", "d", None, finish)
        .await
        .unwrap();
    assert_eq!(progress.tasks_remaining, 0);
    assert!(store.complete_workflow("acme", "w3", finish).await.unwrap());
    assert!(!store.complete_workflow("acme", "w3", finish).await.unwrap());
    let view = store.workflow("acme", "w3").await.unwrap().unwrap();
    assert_eq!(view.workflow.status, WorkflowStatus::Succeeded);
    assert_eq!(view.workflow.finished_at_ms, Some(finish.now_ms));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outcomes_are_learned_once_even_when_recorded_concurrently() {
    let stack = api_only_stack("outcomes").await;
    let store = &stack.learn_deps().store;
    let outcome = |task: &str, success: bool| OutcomeMessage {
        v: FORMAT_VERSION,
        task: attempt("w", task, 1),
        agent: "worker".into(),
        task_type: "work".into(),
        success,
        latency_ms: 40,
        failure: None,
        finished_at_ms: now_ms(),
    };
    assert_eq!(
        store
            .record_outcomes(&[outcome("t0", true)], 0)
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(
        store
            .record_outcomes(&[outcome("t0", true)], 0)
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
                0
            )
            .await
            .unwrap(),
        [true, false, true]
    );
    let concurrent = (3..=8).map(|i| {
        let o = outcome(&format!("t{i}"), i % 2 == 0);
        async move { store.record_outcomes(&[o], 0).await.unwrap() }
    });
    assert!(futures::future::join_all(concurrent)
        .await
        .into_iter()
        .all(|learned| learned == [true]));
    let stats = store
        .agent_stats("acme", "work", &["worker".into(), "nobody".into()])
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
        .map(|i| RouteMessage {
            v: FORMAT_VERSION,
            task: attempt("w", &format!("t{i}"), 1),
            capability: "work".into(),
        })
        .collect();
    stack
        .execute_deps()
        .queue
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
    let parents: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    let mut tasks: Vec<NewTask> = parents
        .iter()
        .map(|p| NewTask {
            id: p.clone(),
            capability: "work".into(),
            input: json!(null),
            depends_on: vec![],
            dependents: vec!["join".into()],
            status: TaskStatus::Queued,
        })
        .collect();
    tasks.push(NewTask {
        id: "join".into(),
        capability: "work".into(),
        input: json!(null),
        depends_on: parents.clone(),
        dependents: vec![],
        status: TaskStatus::Waiting,
    });
    let now = now_ms();
    let workflow = NewWorkflow {
        tenant: "acme".into(),
        workflow_id: "wj".into(),
        name: "join".into(),
        created_at_ms: now,
        dispatch_until_ms: now + 60_000,
        tasks,
    };
    store.create_workflow(&workflow).await.unwrap();
    // Every parent reports twice, all at once.
    let releases = parents
        .iter()
        .chain(parents.iter())
        .map(|parent| async move {
            store
                .release_dependent("acme", "wj", "join", parent, now + 60_000)
                .await
                .unwrap()
        });
    let releases = futures::future::join_all(releases).await;
    let ready = releases
        .iter()
        .filter(|r| matches!(r, Release::Ready { .. }))
        .count();
    assert_eq!(ready, 1, "{releases:?}");
    let view = store.workflow("acme", "wj").await.unwrap().unwrap();
    let join = view.tasks.iter().find(|t| t.id == "join").unwrap();
    assert_eq!(join.status, TaskStatus::Queued);
    assert_eq!(join.deps_remaining, 0);
}
