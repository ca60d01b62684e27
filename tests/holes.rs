//! Nothing stuck: each hole a review of the chain found, reproduced with the fault it needs
//! (a lost response, a throttled call, a handler that died, a message that never came), and
//! the behaviour that closes it. Faults go through the fault-injecting proxy between the
//! handlers' real SDK clients and the emulator.

use std::sync::Arc;

use baton_chain::finish::finish_at;
use baton_chain::store::{AttemptEnd, Ended, WorkflowStore};
use baton_local::agents::AgentReply;
use baton_local::faults::{Fault, FaultPlan, FaultRule};
use baton_local::stack::{LocalStack, StackOptions};
use baton_tests::*;
use baton_types::clock::now_ms;
use baton_types::messages::ExecuteMessage;
use serde_json::{json, Value};

/// A stack whose handlers reach the emulator through the fault proxy (no random faults).
async fn stack_with_faults(name: &str, configure: impl FnOnce(&mut StackOptions)) -> LocalStack {
    start_stack(name, |s| {
        s.faults = Some(FaultPlan::default());
        configure(s);
    })
    .await
}

fn inject(stack: &LocalStack, rule: FaultRule) {
    stack
        .faults()
        .expect("the stack runs with the fault proxy")
        .add_rule(rule)
        .expect("a rule the operation can have");
}

/// A rule that fails `times` requests in a row (the SDK makes 3 attempts per call).
fn throttle(operation: &str, body_contains: &[&str], times: u32) -> FaultRule {
    FaultRule {
        times,
        ..FaultRule::once(operation, body_contains, Fault::Throttle)
    }
}

fn chain(ids: &[&str]) -> Value {
    let tasks: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| match i {
            0 => json!({ "id": id, "capability": "work", "retry": { "max_attempts": 1 } }),
            _ => json!({ "id": id, "capability": "work", "depends_on": [ids[i - 1]] }),
        })
        .collect();
    json!({ "name": "chain", "tasks": tasks })
}

async fn worker(stack: &LocalStack) -> baton_local::agents::AgentServer {
    let server = agent(Arc::new(|call: &Value| {
        AgentReply::ok(json!({ "done": call["task_id"] }))
    }))
    .await;
    register_agent(stack, "worker", &server, &["work"]).await;
    server
}

fn execute_message(message: &aws_sdk_sqs::types::Message) -> ExecuteMessage {
    serde_json::from_str(message.body().unwrap()).unwrap()
}

async fn deliver(stack: &LocalStack, message: &aws_sdk_sqs::types::Message) -> usize {
    let response = baton_execute_agent::handle_batch(stack.execute_deps(), sqs_event(&[message]))
        .await
        .expect("handler returns");
    response.batch_item_failures.len()
}

/// Every item of a workflow's partition, raw.
async fn partition(
    stack: &LocalStack,
    id: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    stack
        .clients
        .dynamodb
        .query()
        .table_name(&stack.settings.state_table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("default#WF#{id}")))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fail_whose_follow_up_broke_off_is_finished_by_the_repair_sweep() {
    let stack = stack_with_faults("fail-resume", |s| {
        s.run_execute = false;
        s.env_overrides
            .insert("MAX_LEASE_ATTEMPTS".into(), "1".into());
    })
    .await;
    worker(&stack).await;
    let id = submit(&stack, &chain(&["a", "b"])).await;
    let a = receive_one(&stack, "ExecuteQueue").await;
    let lease_end = lease_end(&claim_and_die(&stack, &execute_message(&a).task).await);

    // Cleanup fails a (its leases are used up), and the call that counts it is throttled
    // through all the SDK's attempts: the task is failed, out of the lease index, and no
    // message is left to carry its follow-up.
    inject(
        &stack,
        throttle("UpdateItem", &["tasks_remaining = tasks_remaining"], 3),
    );
    let report = sweep_at(&stack, lease_end).await;
    assert_eq!(report.errors, 1, "{report:?}");
    let stuck = workflow_view(&stack, &id).await;
    assert_eq!(task(&stuck, "a")["status"], "failed");
    assert_eq!(task(&stuck, "b")["status"], "waiting");
    assert_eq!(stuck["status"], "running");

    // The repair sweep finds the workflow by its index and runs the follow-up again.
    let repair_at = lease_end + stack.settings.repair_after.as_millis() as i64 + 15_000;
    let report = sweep_at(&stack, repair_at).await;
    assert!(report.repaired >= 1, "{report:?}");
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    assert_eq!(task(&workflow, "a")["error"]["kind"], "lease_expired");
    assert_eq!(task(&workflow, "b")["status"], "skipped");
    // Once the workflow has ended, every one of its items carries an expiry for TTL.
    for item in partition(&stack, &id).await {
        assert!(item.contains_key("expires_at"), "{item:?}");
        assert!(!item.contains_key("lease_until") && !item.contains_key("sweep_at"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_task_whose_messages_were_all_lost_is_finished_by_the_repair_sweep() {
    let stack = start_stack("dlq", |s| s.run_execute = false).await;
    let server = worker(&stack).await;
    let id = submit(&stack, &chain(&["a", "b"])).await;

    // A handler recorded a's result and died; its message then went to the dead-letter queue.
    let a = receive_one(&stack, "ExecuteQueue").await;
    let ended = claim_and_record(
        &stack,
        &execute_message(&a).task,
        AttemptEnd::Succeeded(json!({ "done": "a" })),
    )
    .await;
    assert!(matches!(ended, Ended::Now(_)));
    delete(&stack, "ExecuteQueue", &a).await;

    assert_eq!(
        sweep_at(&stack, now_ms()).await.repaired,
        0,
        "not before its check is due"
    );
    let report = sweep_at(&stack, after_repair_delay(&stack)).await;
    assert_eq!(report.repaired, 1, "{report:?}");
    let b = receive_one(&stack, "ExecuteQueue").await;
    assert_eq!(execute_message(&b).task.task_id, "b");
    assert_eq!(deliver(&stack, &b).await, 0);
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    assert_eq!(server.calls().len(), 1, "a was not called again");
    assert_eq!(server.calls()[0].body["dependencies"]["a"]["done"], "a");
}

async fn delete(stack: &LocalStack, queue: &str, message: &aws_sdk_sqs::types::Message) {
    stack
        .clients
        .sqs
        .delete_message()
        .queue_url(stack.queue_url(queue).unwrap())
        .receipt_handle(message.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_whose_response_was_lost_is_still_this_handlers_claim() {
    // No sweep runs: a claim taken for someone else's would leave the task stuck.
    let stack = stack_with_faults("claim-lost", |_| {}).await;
    let server = worker(&stack).await;
    inject(
        &stack,
        FaultRule::once("UpdateItem", &["claim_token = :token"], Fault::LoseResponse),
    );
    let id = submit(&stack, &chain(&["a"])).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    let a = task(&workflow, "a");
    assert_eq!(a["attempts"][0]["claims"], 1);
    assert_eq!(a["lease_expirations"], 0);
    assert_eq!(server.calls().len(), 1);
    assert_eq!(stack.faults().unwrap().report().lost_responses, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skip_whose_response_was_lost_goes_on_skipping_downstream() {
    let stack = stack_with_faults("skip-lost", |_| {}).await;
    let server = agent_replying(AgentReply::error(422, "bad input")).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    inject(
        &stack,
        FaultRule::once("UpdateItem", &[":skipped"], Fault::LoseResponse),
    );
    let id = submit(&stack, &chain(&["a", "b", "c", "d"])).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    for t in ["b", "c", "d"] {
        assert_eq!(task(&workflow, t)["status"], "skipped", "{t}");
    }
    assert_eq!(stack.faults().unwrap().report().lost_responses, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skip_cut_short_by_a_crash_is_finished_by_the_repair_sweep() {
    let stack = start_stack("skip-crash", |s| s.run_execute = false).await;
    worker(&stack).await;
    let id = submit(&stack, &chain(&["a", "b", "c", "d"])).await;
    let a = receive_one(&stack, "ExecuteQueue").await;
    let failure = baton_types::outcome::TaskFailure::http_status(400, "no");
    claim_and_record(
        &stack,
        &execute_message(&a).task,
        AttemptEnd::Failed(failure),
    )
    .await;
    let store = &stack.execute_deps().store;
    let now = now_ms();
    let finish = finish_at(&stack.settings, now);
    // The handler counted a, skipped b, and died there.
    store
        .count_finished_task(
            &"default".parse().unwrap(),
            &id.parse().unwrap(),
            &"a".parse().unwrap(),
            true,
            now,
        )
        .await
        .unwrap();
    store
        .skip_task(
            &"default".parse().unwrap(),
            &id.parse().unwrap(),
            &"b".parse().unwrap(),
            finish,
        )
        .await
        .unwrap();
    delete(&stack, "ExecuteQueue", &a).await;

    let report = sweep_at(&stack, after_repair_delay(&stack)).await;
    assert!(report.repaired >= 1, "{report:?}");
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    for t in ["b", "c", "d"] {
        assert_eq!(task(&workflow, t)["status"], "skipped", "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_copy_of_a_resent_task_is_dropped_and_only_the_resend_is_routed() {
    let stack = start_stack("late-copy", |s| {
        s.run_route = false;
        s.run_execute = false;
        s.sweep_every = Some(std::time::Duration::ZERO);
        s.env_overrides
            .insert("DISPATCH_TIMEOUT_SECONDS".into(), "10".into());
    })
    .await;
    worker(&stack).await;
    submit(&stack, &chain(&["a"])).await;
    // The first message waits in a backlog past the dispatch time-out; cleanup sends again.
    let original = receive_one(&stack, "RouteQueue").await;
    assert_eq!(sweep_at(&stack, now_ms() + 11_000).await.redispatched, 1);
    let resend = receive_one(&stack, "RouteQueue").await;
    let sent_long_ago = now_ms() - 60_000;

    let routed = baton_route::handle_batch(
        stack.route_deps(),
        sqs_event(&[&sent_at(&original, sent_long_ago)]),
    )
    .await
    .unwrap();
    assert!(routed.batch_item_failures.is_empty());
    assert_eq!(
        queue_depth(&stack, "ExecuteQueue").await,
        0,
        "the late copy is dropped"
    );

    let routed = baton_route::handle_batch(
        stack.route_deps(),
        sqs_event(&[&sent_at(&resend, sent_long_ago)]),
    )
    .await
    .unwrap();
    assert!(routed.batch_item_failures.is_empty());
    assert_eq!(
        queue_depth(&stack, "ExecuteQueue").await,
        1,
        "the resend goes on to execution"
    );
}

/// `message` as SQS would deliver it had it been sent at `at_ms`.
fn sent_at(message: &aws_sdk_sqs::types::Message, at_ms: i64) -> aws_sdk_sqs::types::Message {
    aws_sdk_sqs::types::Message::builder()
        .set_message_id(message.message_id.clone())
        .set_receipt_handle(message.receipt_handle.clone())
        .set_body(message.body.clone())
        .attributes(
            aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
            at_ms.to_string(),
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_no_handler_takes_is_sent_again_with_growing_waits_then_fails() {
    let stack = start_stack("redispatch", |s| {
        s.run_route = false;
        s.env_overrides
            .insert("DISPATCH_TIMEOUT_SECONDS".into(), "10".into());
        s.env_overrides.insert("MAX_DISPATCHES".into(), "2".into());
    })
    .await;
    worker(&stack).await;
    let id = submit(&stack, &chain(&["a"])).await;
    let start = now_ms();
    let at = |s: i64| start + s * 1000;
    assert_eq!(sweep_at(&stack, at(5)).await.redispatched, 0);
    assert_eq!(sweep_at(&stack, at(11)).await.redispatched, 1);
    // The next wait doubles: 20 s.
    assert_eq!(sweep_at(&stack, at(25)).await.redispatched, 0);
    assert_eq!(sweep_at(&stack, at(32)).await.redispatched, 1);
    let report = sweep_at(&stack, at(80)).await;
    assert_eq!((report.redispatched, report.failed), (0, 1), "{report:?}");
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    let a = task(&workflow, "a");
    assert_eq!(a["error"]["kind"], "not_dispatched");
    assert_eq!(
        queue_depth(&stack, "RouteQueue").await,
        3,
        "sent once, then twice again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_unreadable_agent_item_does_not_stop_routing() {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let stack = start_stack("corrupt-agent", |_| {}).await;
    let server = worker(&stack).await;
    stack
        .clients
        .dynamodb
        .put_item()
        .table_name(&stack.settings.state_table)
        .item("pk", V::S("default#AGENTS".into()))
        .item("sk", V::S("AGENT#broken".into()))
        .item("name", V::S("broken".into()))
        .item("kind", V::S("smtp".into()))
        .send()
        .await
        .unwrap();
    let id = submit(&stack, &chain(&["a"])).await;
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );
    assert_eq!(server.calls().len(), 1);
    let listed = get(&stack, "/v1/agents").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["agents"].as_array().unwrap().len(), 1);
    // The health summary says what routing skips, and why.
    let health = get(&stack, "/v1/agents/health").await;
    assert_eq!(health.body["total"], 2);
    assert_eq!(health.body["unreadable"][0]["name"], "broken");
    assert!(health.body["unreadable"][0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("smtp")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_stored_without_their_workflow_record_are_dropped_not_run() {
    let stack = stack_with_faults("orphans", |_| {}).await;
    let server = worker(&stack).await;
    inject(&stack, throttle("PutItem", &["\"WORKFLOW\""], 3));
    let answer = post(&stack, "/v1/workflows", &chain(&["a", "b"]).to_string()).await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(answer.body["error"]["code"], "unavailable");

    let later = now_ms() + stack.settings.dispatch_timeout.as_millis() as i64 + 1;
    let report = sweep_at(&stack, later).await;
    assert_eq!(
        (report.abandoned, report.redispatched),
        (1, 0),
        "{report:?}"
    );
    assert!(
        server.calls().is_empty(),
        "no agent is called for a refused submission"
    );
    assert_eq!(queue_depth(&stack, "RouteQueue").await, 0);
    // The orphans are left to TTL.
    let items = state_table(&stack).await;
    let tasks: Vec<_> = items
        .iter()
        .filter(|i| i["sk"].as_s().is_ok_and(|sk| sk.starts_with("TASK#")))
        .collect();
    assert_eq!(tasks.len(), 2);
    let root = tasks
        .iter()
        .find(|t| t["sk"].as_s().unwrap() == "TASK#a")
        .unwrap();
    assert!(root.contains_key("expires_at") && !root.contains_key("lease_until"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submission_whose_response_was_lost_is_accepted_and_runs_once() {
    let stack = stack_with_faults("submit-lost", |_| {}).await;
    inject(
        &stack,
        FaultRule::once("TransactWriteItems", &["AGENT#worker"], Fault::LoseResponse),
    );
    let server = worker(&stack).await; // registered: 201, not 409
    inject(
        &stack,
        FaultRule::once("PutItem", &["\"WORKFLOW\""], Fault::LoseResponse),
    );
    let id = submit(&stack, &chain(&["a"])).await; // 202, not 409
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );
    assert_eq!(server.calls().len(), 1);
    assert_eq!(stack.faults().unwrap().report().lost_responses, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_whose_response_was_lost_still_sends_the_dependent_on() {
    // No sweep runs: a release taken for someone else's would leave d waiting.
    let stack = stack_with_faults("release-lost", |_| {}).await;
    let server = worker(&stack).await;
    inject(
        &stack,
        FaultRule::once(
            "UpdateItem",
            &["released_by = :parent"],
            Fault::LoseResponse,
        ),
    );
    let id = submit(&stack, &diamond("work")).await;
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );
    assert_eq!(server.calls().len(), 4);
    assert_eq!(stack.faults().unwrap().report().lost_responses, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follow_up_that_ran_out_of_retries_is_finished_by_the_repair_sweep() {
    let stack = stack_with_faults("follow-up-throttled", |_| {}).await;
    let server = worker(&stack).await;
    // Releasing b is throttled through all the SDK's attempts: the handler reports the message
    // failed, and SQS would deliver it again only after the 15-minute visibility time-out.
    inject(&stack, throttle("UpdateItem", &["ADD deps_done"], 3));
    let id = submit(&stack, &chain(&["a", "b"])).await;
    eventually("a is recorded and its follow-up failed", || async {
        let faults = stack.faults().unwrap();
        let w = workflow_view(&stack, &id).await;
        (faults.pending_rules() == 0 && task(&w, "a")["status"] == "succeeded").then_some(())
    })
    .await;
    let report = sweep_at(&stack, after_repair_delay(&stack)).await;
    assert!(report.repaired >= 1, "{report:?}");
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    assert_eq!(server.calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_workflow_is_never_read_finished_while_a_branch_still_runs() {
    let stack = start_stack("consistent", |_| {}).await;
    let server = agent(Arc::new(|call: &Value| match call["task_id"].as_str() {
        Some("b") => AgentReply::error(422, "refused"),
        Some("c") => {
            AgentReply::ok(json!({ "slow": true })).after(std::time::Duration::from_millis(1500))
        }
        _ => AgentReply::ok(json!({})),
    }))
    .await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "branches", "tasks": [
            { "id": "a", "capability": "work" },
            { "id": "b", "capability": "work", "depends_on": ["a"] },
            { "id": "c", "capability": "work", "depends_on": ["a"] },
            { "id": "d", "capability": "work", "depends_on": ["b", "c"] }
        ]}),
    )
    .await;
    let failing = eventually("b has failed while c still runs", || async {
        let w = workflow_view(&stack, &id).await;
        (w["failed_task"] == "b").then_some(w)
    })
    .await;
    assert_consistent(&failing);
    // Every read on the way is checked: finished means every task has ended.
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    assert_eq!(
        task(&workflow, "c")["status"],
        "succeeded",
        "the other branch ran to its end"
    );
    assert_eq!(task(&workflow, "d")["status"], "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_stack_restarts_against_an_emulator_that_has_its_resources() {
    let prefix = format!("restart-{}", std::process::id());
    let mut first = StackOptions::new(prefix.clone());
    first.run_execute = false;
    first.sweep_every = Some(std::time::Duration::ZERO);
    let stack = LocalStack::start_on_emulator(emulator_endpoint(), first)
        .await
        .expect("first start");
    let server = worker(&stack).await;
    let id = submit(&stack, &chain(&["a", "b"])).await;
    eventually("a is routed", || async {
        (queue_depth(&stack, "ExecuteQueue").await == 1).then_some(())
    })
    .await;
    stack.shutdown().await;

    // Killed and started again on the same emulator: the tables, queues, agents and the
    // work in flight are all still there.
    let mut again = StackOptions::new(prefix);
    again.sweep_every = Some(std::time::Duration::ZERO);
    let stack = LocalStack::start_on_emulator(emulator_endpoint(), again)
        .await
        .expect("a restart finds its resources and uses them");
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    assert_eq!(server.calls().len(), 2);
}
