//! Work of every shape ends, and ends at a cost in proportion to its size: a long chain of
//! diamonds whose root fails is skipped in one linear walk, and the widest fan-out and fan-in
//! a workflow may have succeeds, its sink receiving every output.

use std::sync::Arc;

use baton_local::agents::AgentReply;
use baton_tests::*;
use serde_json::{json, Value};

/// `k` diamonds in a chain: `root`, then for each diamond two sides and a join that the next
/// diamond's sides depend on.
fn diamond_chain(k: usize) -> Value {
    let mut tasks = vec![json!({ "id": "root", "capability": "root" })];
    let mut join = "root".to_string();
    for i in 0..k {
        let (left, right, next) = (format!("l{i}"), format!("r{i}"), format!("j{i}"));
        tasks.push(json!({ "id": left, "capability": "work", "depends_on": [join] }));
        tasks.push(json!({ "id": right, "capability": "work", "depends_on": [join] }));
        tasks.push(json!({ "id": next, "capability": "work", "depends_on": [left, right] }));
        join = next;
    }
    json!({ "name": "diamonds", "tasks": tasks })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_of_twenty_diamonds_whose_root_fails_is_skipped_in_one_linear_walk() {
    let stack = start_stack("diamonds", |_| {}).await;
    let root = agent_replying(AgentReply::error(400, "bad input")).await;
    let worker = agent_replying(AgentReply::ok(json!({ "done": true }))).await;
    register_agent(&stack, "root", &root, &["root"]).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let before = stack.api_calls.snapshot();
    let id = submit(&stack, &diamond_chain(20)).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    let tasks = workflow["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 61);
    for task in tasks.iter().filter(|t| t["id"] != "root") {
        assert_eq!(task["status"], "skipped", "{task:#}");
    }
    assert!(worker.calls().is_empty());
    // Each task is skipped by one write and counted by one more; the walk visits each once
    // (the walk that follows every path made 40,953 writes for 12 diamonds).
    let after = stack.api_calls.snapshot();
    let updates = after.get("dynamodb.UpdateItem").copied().unwrap_or(0.0)
        - before.get("dynamodb.UpdateItem").copied().unwrap_or(0.0);
    assert!(updates <= 61.0 * 4.0, "{updates} UpdateItems for 61 tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fan_out_and_fan_in_of_a_hundred_tasks_succeeds() {
    fan_out_and_in(100).await;
}

/// The widest a workflow may be (`MAX_TASKS`); about three minutes on moto, so it runs with
/// the benchmarks (`infra/scale.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "minutes long: infra/scale.sh runs it"]
async fn a_fan_out_and_fan_in_of_five_hundred_tasks_succeeds() {
    fan_out_and_in(500).await;
}

/// A source, `width - 2` tasks that depend on it, and a sink that depends on all of them.
async fn fan_out_and_in(width: usize) {
    let stack = start_stack(&format!("fan-{width}"), |_| {}).await;
    let worker = agent(Arc::new(|call: &Value| {
        let received = call["dependencies"].as_object().map_or(0, |d| d.len());
        AgentReply::ok(json!({ "task": call["task_id"], "received": received }))
    }))
    .await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let middle: Vec<String> = (0..width - 2).map(|i| format!("m{i}")).collect();
    let mut tasks = vec![json!({ "id": "source", "capability": "work" })];
    tasks.extend(
        middle
            .iter()
            .map(|id| json!({ "id": id, "capability": "work", "depends_on": ["source"] })),
    );
    tasks.push(json!({ "id": "sink", "capability": "work", "depends_on": middle }));
    let id = submit(&stack, &json!({ "name": "wide", "tasks": tasks })).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    assert_eq!(workflow["tasks"].as_array().map(Vec::len), Some(width));
    assert_eq!(task(&workflow, "sink")["output"]["received"], width - 2);
    assert_eq!(worker.calls().len(), width, "each task called once");
}
