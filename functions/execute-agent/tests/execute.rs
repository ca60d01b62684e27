//! execute-agent's handler on the memory store: one call per attempt, whatever is delivered
//! twice or whose response is lost.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_chain::memory::fixtures::{
    execute_message, id, retryable_failure, seed, settings, sqs_event, task_ref, tenant,
    ScriptedInvoker, AGENT,
};
use baton_chain::memory::{Fault, MemoryQueue, MemoryStore};
use baton_chain::store::WorkflowControls;
use baton_execute_agent::{handle_batch, ExecuteDeps};
use baton_types::clock::now_ms;
use baton_types::control::Hold;
use baton_types::messages::ExecuteMessage;
use baton_types::outcome::TaskFailure;
use baton_types::task::TaskStatus;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

type Deps = ExecuteDeps<MemoryStore, MemoryQueue, ScriptedInvoker>;

const CHAIN: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"])];

async fn deps_answering(script: Vec<Result<Value, TaskFailure>>) -> Deps {
    let deps = ExecuteDeps::new(
        MemoryStore::new(),
        MemoryQueue::new(),
        ScriptedInvoker::new(script),
        settings(),
    );
    seed(&deps.store, "w", CHAIN, now_ms()).await;
    deps
}

async fn deliver(deps: &Deps, message: &ExecuteMessage) -> SqsBatchResponse {
    let event: SqsEvent = serde_json::from_value(sqs_event(std::slice::from_ref(message))).unwrap();
    handle_batch(deps, LambdaEvent::new(event, Context::default()))
        .await
        .unwrap()
}

async fn status(deps: &Deps, task: &str) -> (TaskStatus, u32) {
    let t = deps.store.stored_task("w", task).await;
    (t.status, t.attempt)
}

#[tokio::test]
async fn a_claimed_attempt_calls_its_agent_and_ends_the_task() {
    let deps = deps_answering(vec![Ok(json!({"answer": 1}))]).await;
    let mut message = execute_message(task_ref("w", "a", 1));
    message.ready_at_ms = Some(baton_types::clock::now_ms() - 5_000);
    let response = deliver(&deps, &message).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(deps.invoker.calls().len(), 1);
    let a = deps.store.stored_task("w", "a").await;
    assert_eq!(
        (a.status, a.output),
        (TaskStatus::Succeeded, Some(json!({"answer": 1})))
    );
    let sent = deps.queue.drain();
    assert_eq!(sent.route.len(), 1, "b is released");
    assert_eq!(sent.route[0].0.task, task_ref("w", "b", 1));
    assert_eq!(sent.outcomes.len(), 1);
    assert!(sent.outcomes[0].success);
    assert_eq!(sent.outcomes[0].agent, AGENT);
    // What memory keeps of the call: its queue wait and the starts of its input and output.
    let details = &sent.outcomes[0].details;
    assert!(
        details.queue_wait_ms.is_some_and(|w| w >= 5_000),
        "{details:?}"
    );
    assert_eq!(details.output_preview.as_deref(), Some(r#"{"answer":1}"#));
    assert!(details.input_preview.is_some());
}

#[tokio::test]
async fn a_dependent_receives_the_outputs_of_its_dependencies() {
    let deps = deps_answering(vec![Ok(json!({"x": 1}))]).await;
    deliver(&deps, &execute_message(task_ref("w", "a", 1))).await;
    deliver(&deps, &execute_message(task_ref("w", "b", 1))).await;
    let calls = deps.invoker.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].2, json!({"a": {"x": 1}}));
}

#[tokio::test]
async fn a_redelivered_message_calls_the_agent_once() {
    let deps = deps_answering(Vec::new()).await;
    let message = execute_message(task_ref("w", "a", 1));
    deliver(&deps, &message).await;
    let response = deliver(&deps, &message).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(deps.invoker.calls().len(), 1);
    let view = deps.store.stored_view("w").await;
    assert_eq!(view.tasks[0].attempts.len(), 1);
    assert_eq!(view.workflow.tasks_done, ["a"]);
}

#[tokio::test]
async fn a_retryable_failure_queues_the_next_attempt_and_sends_it_after_its_backoff() {
    let deps = deps_answering(vec![Err(retryable_failure())]).await;
    deliver(&deps, &execute_message(task_ref("w", "a", 1))).await;
    assert_eq!(status(&deps, "a").await, (TaskStatus::Queued, 2));
    let sent = deps.queue.drain();
    assert_eq!(sent.route.len(), 1);
    assert_eq!(sent.route[0].0.task, task_ref("w", "a", 2));
    assert!(!sent.route[0].1.is_zero(), "sent with its backoff");
    assert!(!sent.outcomes[0].success);
}

#[tokio::test]
async fn a_claim_whose_response_was_lost_is_recognised_as_its_own() {
    let deps = deps_answering(Vec::new()).await;
    deps.store.inject("claim_task", Fault::Retried, 1);
    deliver(&deps, &execute_message(task_ref("w", "a", 1))).await;
    assert_eq!(deps.invoker.calls().len(), 1);
    assert_eq!(status(&deps, "a").await, (TaskStatus::Succeeded, 1));
}

#[tokio::test]
async fn an_end_whose_response_was_lost_resumes_without_calling_the_agent_again() {
    let deps = deps_answering(Vec::new()).await;
    deps.store.inject("end_attempt", Fault::LoseResponse, 1);
    let message = execute_message(task_ref("w", "a", 1));
    let response = deliver(&deps, &message).await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "SQS delivers it again"
    );
    assert!(
        deps.queue.drain_route().is_empty(),
        "the follow-up did not run yet"
    );
    let response = deliver(&deps, &message).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(deps.invoker.calls().len(), 1);
    let released: Vec<_> = deps
        .queue
        .drain_route()
        .into_iter()
        .map(|(m, _)| m.task)
        .collect();
    assert_eq!(released, [task_ref("w", "b", 1)]);
}

#[tokio::test]
async fn a_task_held_by_a_cancel_is_cancelled_without_a_call() {
    let deps = deps_answering(Vec::new()).await;
    deps.store
        .hold_task(&tenant(), &id("w"), &id("a"), Hold::Cancel)
        .await
        .unwrap();
    deliver(&deps, &execute_message(task_ref("w", "a", 1))).await;
    assert!(deps.invoker.calls().is_empty());
    assert_eq!(status(&deps, "a").await, (TaskStatus::Cancelled, 1));
    assert_eq!(status(&deps, "b").await, (TaskStatus::Skipped, 1));
}
