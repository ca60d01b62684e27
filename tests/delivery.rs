//! At-least-once delivery and crashes: duplicates change nothing, and work a dead handler
//! left behind is picked up again.

use std::sync::Arc;

use baton_chain::store::{AttemptEnd, Ended};
use baton_local::agents::AgentReply;
use baton_local::agents::AgentServer;
use baton_local::stack::{LocalStack, StackOptions};
use baton_tests::*;
use baton_types::clock::now_ms;
use baton_types::messages::ExecuteMessage;
use serde_json::{json, Value};

fn counting_agent() -> baton_local::agents::Behaviour {
    Arc::new(|call: &Value| AgentReply::ok(json!({ "done": call["task_id"] })))
}

/// A stack with one counting agent for `work`, and a one-task workflow submitted to it.
async fn one_task_workflow(
    name: &str,
    configure: impl FnOnce(&mut StackOptions),
) -> (LocalStack, AgentServer, String) {
    let stack = start_stack(name, configure).await;
    let server = agent(counting_agent()).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let task = json!({ "name": "one", "tasks": [{ "id": "t", "capability": "work" }] });
    let id = submit(&stack, &task).await;
    (stack, server, id)
}

fn chain() -> Value {
    json!({ "name": "chain", "tasks": [
        { "id": "a", "capability": "work" },
        { "id": "b", "capability": "work", "depends_on": ["a"] }
    ]})
}

/// Runs execute-agent on `message` as Lambda would, and checks it reported no failure.
async fn deliver(stack: &LocalStack, message: &aws_sdk_sqs::types::Message) {
    let response = baton_execute_agent::handle_batch(stack.execute_deps(), sqs_event(&[message]))
        .await
        .expect("handler returns");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
}

fn execute_message(message: &aws_sdk_sqs::types::Message) -> ExecuteMessage {
    serde_json::from_str(message.body().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_execute_delivery_calls_the_agent_once_and_completes_once() {
    let stack = start_stack("duplicate", |s| s.run_execute = false).await;
    let server = agent(counting_agent()).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let id = submit(&stack, &chain()).await;

    let a = receive_one(&stack, "ExecuteQueue").await;
    // Twice at once, then a third time after the attempt ended.
    tokio::join!(deliver(&stack, &a), deliver(&stack, &a));
    deliver(&stack, &a).await;
    assert_eq!(
        server.calls().len(),
        1,
        "the agent is called once per attempt"
    );

    // b was released once. The parent that released it re-sends it when delivered again
    // (that delivery cannot know whether the first one died before sending): the claim
    // absorbs the copies, and b runs once.
    settle(&stack, "RouteQueue").await;
    // Besides a's message (received above, still in flight), the queue holds b's copies.
    let copies_of_b = queue_depth(&stack, "ExecuteQueue").await - 1;
    assert!((1..=3).contains(&copies_of_b), "{copies_of_b}");
    for _ in 0..copies_of_b {
        let b = receive_one(&stack, "ExecuteQueue").await;
        assert_eq!(execute_message(&b).task.task_id, "b");
        assert_eq!(execute_message(&b).task.attempt, 1);
        deliver(&stack, &b).await;
    }
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    for t in ["a", "b"] {
        let attempts = task(&workflow, t)["attempts"].clone();
        assert_eq!(
            attempts.as_array().map(Vec::len),
            Some(1),
            "{t}: {attempts}"
        );
        assert_eq!(attempts[0]["claims"], 1, "{t} was claimed once");
    }
    assert_eq!(server.calls().len(), 2);

    // The learner saw each attempt once, however often its outcome was sent.
    settle(&stack, "LearnQueue").await;
    let stats = learned_stats(&stack, "worker", "work", 2).await;
    assert_eq!((stats.count, stats.successes), (2, 2));
}

/// Waits until a queue whose consumer runs has nothing left, visible or in flight.
async fn settle(stack: &LocalStack, queue: &str) {
    eventually(&format!("{queue} drained"), || async {
        (queue_depth(stack, queue).await == 0).then_some(())
    })
    .await;
}

/// Just after a claimed task's lease runs out: the claim's own, or the dispatch lease it kept
/// when that was longer.
fn lease_end(claimed: &baton_types::records::TaskRecord) -> i64 {
    claimed
        .lease_until_ms
        .expect("a claimed task holds a lease")
        + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_whose_lease_expired_is_picked_up_again_by_cleanup_and_finishes() {
    let (stack, server, id) = one_task_workflow("lease", |s| s.run_execute = false).await;

    // A handler claims attempt 1 and dies before its result is recorded; its lease runs out.
    let first = receive_one(&stack, "ExecuteQueue").await;
    let attempt = execute_message(&first).task;
    let claimed = claim_and_die(&stack, &attempt).await;

    let report = baton_cleanup::sweep(stack.cleanup_deps(), lease_end(&claimed)).await;
    assert_eq!(report.reclaimed, 1, "{report:?}");

    // The same attempt is routed again, to the same agent: a lost lease is not a retry.
    let second = receive_one(&stack, "ExecuteQueue").await;
    let again = execute_message(&second);
    assert_eq!(
        (again.task.attempt, again.route.primary.as_str()),
        (1, "worker")
    );
    deliver(&stack, &second).await;
    // The first message, redelivered later, finds the attempt ended: nothing more happens.
    deliver(&stack, &first).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    let t = task(&workflow, "t");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(
        t["attempts"][0]["claims"], 2,
        "two handlers claimed attempt 1"
    );
    assert_eq!(t["lease_expirations"], 1);
    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].idempotency_key.as_deref(),
        Some(format!("default:{id}:t:1").as_str()),
        "the re-claimed attempt keeps its key, so the agent can recognise a repeat"
    );
    assert_eq!(
        baton_cleanup::sweep(stack.cleanup_deps(), now_ms()).await,
        Default::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_that_died_after_recording_is_resumed_without_calling_the_agent_again() {
    let stack = start_stack("resume", |s| s.run_execute = false).await;
    let server = agent(counting_agent()).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let id = submit(&stack, &chain()).await;

    // The handler got as far as recording a's output, then died.
    let a = receive_one(&stack, "ExecuteQueue").await;
    let recorded = claim_and_record(
        &stack,
        &execute_message(&a).task,
        AttemptEnd::Succeeded(json!({ "done": "a" })),
    )
    .await;
    assert!(matches!(recorded, Ended::Now(_)));

    // SQS delivers the message again: the follow-up steps run, the agent is not called.
    deliver(&stack, &a).await;
    let b = receive_one(&stack, "ExecuteQueue").await;
    assert_eq!(execute_message(&b).task.task_id, "b");
    deliver(&stack, &b).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    let calls = server.calls();
    assert_eq!(calls.len(), 1, "only b called the agent");
    assert_eq!(calls[0].body["dependencies"]["a"]["done"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_route_message_is_sent_again_by_cleanup() {
    let (stack, server, id) = one_task_workflow("lost", |s| s.run_route = false).await;

    // The route message is lost.
    let lost = receive_one(&stack, "RouteQueue").await;
    stack
        .clients
        .sqs
        .delete_message()
        .queue_url(stack.queue_url("RouteQueue").unwrap())
        .receipt_handle(lost.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();

    // Before the dispatch deadline nothing happens; after it, cleanup sends the task again.
    assert_eq!(
        baton_cleanup::sweep(stack.cleanup_deps(), now_ms())
            .await
            .redispatched,
        0
    );
    let later = now_ms() + stack.settings.dispatch_timeout.as_millis() as i64 + 1;
    assert_eq!(
        baton_cleanup::sweep(stack.cleanup_deps(), later)
            .await
            .redispatched,
        1
    );

    let resent = receive_one(&stack, "RouteQueue").await;
    let response = baton_route::handle_batch(stack.route_deps(), sqs_event(&[&resent]))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    assert_eq!(server.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_whose_handlers_keep_dying_fails_after_its_lease_attempts() {
    let stack = start_stack("exhausted", |s| {
        s.run_execute = false;
        s.env_overrides
            .insert("MAX_LEASE_ATTEMPTS".into(), "1".into());
    })
    .await;
    let server = agent(counting_agent()).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let id = submit(&stack, &chain()).await;
    let a = receive_one(&stack, "ExecuteQueue").await;
    let attempt = execute_message(&a).task;
    let claimed = claim_and_die(&stack, &attempt).await;

    let report = baton_cleanup::sweep(stack.cleanup_deps(), lease_end(&claimed)).await;
    assert_eq!(report.failed, 1, "{report:?}");
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    assert_eq!(task(&workflow, "a")["error"]["kind"], "lease_expired");
    assert_eq!(task(&workflow, "b")["status"], "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_route_message_still_runs_the_task_once() {
    let stack = start_stack("route-dup", |s| {
        s.run_route = false;
        s.run_execute = false;
    })
    .await;
    let server = agent(counting_agent()).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "one", "tasks": [{ "id": "t", "capability": "work" }] }),
    )
    .await;

    let routed = receive_one(&stack, "RouteQueue").await;
    for _ in 0..2 {
        let response = baton_route::handle_batch(stack.route_deps(), sqs_event(&[&routed]))
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    let first = receive_one(&stack, "ExecuteQueue").await;
    let second = receive_one(&stack, "ExecuteQueue").await;
    tokio::join!(deliver(&stack, &first), deliver(&stack, &second));
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );
    assert_eq!(server.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_outcome_is_learned_once() {
    let (stack, _server, id) = one_task_workflow("learn-dup", |s| s.run_learn = false).await;
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );

    let outcome = receive_one(&stack, "LearnQueue").await;
    // The same message twice in one batch, then again in a later one.
    for batch in [vec![&outcome, &outcome], vec![&outcome]] {
        let response = baton_learn::handle_batch(stack.learn_deps(), sqs_event(&batch))
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }
    let stats = learned_stats(&stack, "worker", "work", 1).await;
    assert_eq!(
        (stats.count, stats.successes, stats.recent.len()),
        (1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_sweeps_reclaim_an_expired_lease_once() {
    let (stack, _server, _) = one_task_workflow("sweeps", |s| s.run_execute = false).await;
    let first = receive_one(&stack, "ExecuteQueue").await;
    let claimed = claim_and_die(&stack, &execute_message(&first).task).await;

    let (a, b) = tokio::join!(
        baton_cleanup::sweep(stack.cleanup_deps(), lease_end(&claimed)),
        baton_cleanup::sweep(stack.cleanup_deps(), lease_end(&claimed))
    );
    assert_eq!(a.reclaimed + b.reclaimed, 1, "{a:?} {b:?}");
    let second = receive_one(&stack, "ExecuteQueue").await;
    assert_eq!(execute_message(&second).task.attempt, 1);
    settle(&stack, "RouteQueue").await;
    assert_eq!(
        queue_depth(&stack, "ExecuteQueue").await,
        2,
        "attempt 1, first routed and then reclaimed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_message_is_reported_failed_and_ends_in_the_dead_letter_queue() {
    let stack = start_stack("poison", |s| s.run_learn = false).await;
    let sqs = &stack.clients.sqs;
    let url = stack.queue_url("LearnQueue").unwrap();
    sqs.send_message()
        .queue_url(url)
        .message_body("{\"not\": \"an outcome\"}")
        .send()
        .await
        .unwrap();
    // Each receive fails it, as the handler reports; after maxReceiveCount (5, from the
    // template) SQS moves it to the dead-letter queue instead of delivering it again.
    for _ in 0..5 {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let message = out
            .messages
            .unwrap_or_default()
            .pop()
            .expect("delivered again");
        let response = baton_learn::handle_batch(stack.learn_deps(), sqs_event(&[&message]))
            .await
            .unwrap();
        assert_eq!(response.batch_item_failures.len(), 1);
    }
    let after = sqs
        .receive_message()
        .queue_url(url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(after.messages.unwrap_or_default().is_empty());
    assert_eq!(queue_depth(&stack, "LearnDeadLetterQueue").await, 1);
}
