//! route's handler on the memory store: what it sends on, and what it ends when no agent can
//! take a task.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_chain::memory::fixtures::{
    id, route_message, seed, settings, sqs_event, task_ref, tenant, AGENT,
};
use baton_chain::memory::{Fault, MemoryQueue, MemoryStore};
use baton_chain::store::{AgentRegistry, RoutingState, WorkflowStore};
use baton_route::{handle_batch, RouteDeps};
use baton_types::clock::now_ms;
use baton_types::messages::RouteMessage;
use baton_types::outcome::FailureKind;
use baton_types::task::{TaskStatus, WorkflowStatus};
use lambda_runtime::{Context, LambdaEvent};

const CHAIN: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"])];

async fn deps_with_workflow() -> RouteDeps<MemoryStore, MemoryQueue> {
    let deps = RouteDeps::new(MemoryStore::new(), MemoryQueue::new(), settings());
    seed(&deps.store, "w", CHAIN, now_ms()).await;
    deps
}

async fn deliver(
    deps: &RouteDeps<MemoryStore, MemoryQueue>,
    messages: &[RouteMessage],
) -> SqsBatchResponse {
    let event: SqsEvent = serde_json::from_value(sqs_event(messages)).unwrap();
    handle_batch(deps, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_ready_task_goes_to_execution_on_its_capable_agent() {
    let deps = deps_with_workflow().await;
    let response = deliver(&deps, &[route_message(task_ref("w", "a", 1))]).await;
    assert!(response.batch_item_failures.is_empty());
    let sent = deps.queue.drain();
    assert_eq!(sent.execute.len(), 1);
    assert_eq!(sent.execute[0].route.primary, AGENT);
    assert_eq!(sent.execute[0].task, task_ref("w", "a", 1));
    assert!(sent.route.is_empty());
}

#[tokio::test]
async fn a_redelivered_message_writes_nothing_and_its_copy_is_left_to_the_claim() {
    let deps = deps_with_workflow().await;
    let message = route_message(task_ref("w", "a", 1));
    let before = deps
        .store
        .task(&tenant(), &id("w"), &id("a"))
        .await
        .unwrap();
    deliver(&deps, std::slice::from_ref(&message)).await;
    deliver(&deps, &[message]).await;
    // Routing writes nothing: each copy goes on, and execute-agent's claim takes one.
    assert_eq!(deps.queue.drain_execute().len(), 2);
    assert_eq!(
        deps.store
            .task(&tenant(), &id("w"), &id("a"))
            .await
            .unwrap(),
        before
    );
}

#[tokio::test]
async fn a_message_not_due_yet_goes_round_again_with_the_rest_of_its_delay() {
    let deps = deps_with_workflow().await;
    let mut message = route_message(task_ref("w", "a", 1));
    message.not_before_ms = Some(now_ms() + 120_000);
    deliver(&deps, std::slice::from_ref(&message)).await;
    let sent = deps.queue.drain();
    assert!(sent.execute.is_empty());
    assert_eq!(sent.route.len(), 1);
    assert_eq!(sent.route[0].0, message);
    assert!(sent.route[0].1.as_secs() > 100, "{:?}", sent.route[0].1);
}

#[tokio::test]
async fn a_task_no_agent_can_take_fails_and_its_dependents_are_skipped() {
    let deps = deps_with_workflow().await;
    deps.store
        .change_agent(
            &tenant(),
            &baton_chain::store::AgentChange {
                name: AGENT,
                agent: None,
                expected_version: Some(1),
                expected_guard: None,
                needs: Vec::new(),
                change_id: "delete",
                count: None,
            },
        )
        .await
        .unwrap();
    let response = deliver(&deps, &[route_message(task_ref("w", "a", 1))]).await;
    assert!(response.batch_item_failures.is_empty());
    let view = deps.store.stored_view("w").await;
    let a = &view.tasks[0];
    assert_eq!(a.status, TaskStatus::Failed);
    assert_eq!(
        a.failure.as_ref().map(|f| f.kind),
        Some(FailureKind::NoCapableAgent)
    );
    assert_eq!(view.tasks[1].status, TaskStatus::Skipped);
    assert_eq!(view.workflow.status, WorkflowStatus::Failed);
    assert!(deps.queue.drain().execute.is_empty());
}

#[tokio::test]
async fn an_end_whose_response_was_lost_is_safe_to_deliver_again() {
    let deps = deps_with_workflow().await;
    deps.store
        .replace_agent(
            &tenant(),
            &baton_chain::memory::fixtures::agent(AGENT, &["other"]),
        )
        .await
        .unwrap();
    deps.store.inject("end_attempt", Fault::LoseResponse, 1);
    let message = route_message(task_ref("w", "a", 1));
    let response = deliver(&deps, std::slice::from_ref(&message)).await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "SQS delivers it again"
    );
    let response = deliver(&deps, &[message]).await;
    assert!(response.batch_item_failures.is_empty());
    let view = deps.store.stored_view("w").await;
    assert_eq!(view.tasks[0].attempts.len(), 1, "the attempt ended once");
    assert_eq!(view.workflow.tasks_done, ["a", "b"]);
    assert_eq!(view.workflow.status, WorkflowStatus::Failed);
}

#[tokio::test]
async fn a_full_agent_makes_the_task_wait_without_spending_an_attempt() {
    let deps = RouteDeps::new(MemoryStore::new(), MemoryQueue::new(), settings());
    let now = now_ms();
    seed(&deps.store, "w", CHAIN, now).await;
    let mut limited = baton_chain::memory::fixtures::agent(AGENT, &["c"]);
    limited.max_concurrency = Some(1);
    deps.store.replace_agent(&tenant(), &limited).await.unwrap();
    let hold = baton_chain::store::SlotHold {
        holder: "another call",
        needs: &Default::default(),
        until_ms: now + 60_000,
    };
    deps.store
        .acquire_slot(&tenant(), &limited.name, limited.limits(), hold, now)
        .await
        .unwrap();
    deliver(&deps, &[route_message(task_ref("w", "a", 1))]).await;
    let sent = deps.queue.drain();
    assert!(sent.execute.is_empty());
    assert_eq!((sent.route.len(), sent.route[0].0.waits), (1, 1));
    let a = deps.store.stored_task("w", "a").await;
    assert_eq!(
        (a.status, a.attempt, a.attempts.len()),
        (TaskStatus::Queued, 1, 0)
    );
    assert!(
        a.lease_until_ms.unwrap() > now + 60_000,
        "the dispatch lease moved with the wait"
    );
}
