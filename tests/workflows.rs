//! Whole workflows through the whole chain: the local stack, moto, and real HTTP agents.

use std::sync::Arc;

use baton_local::agents::AgentReply;
use baton_tests::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diamond_workflow_succeeds_and_the_join_receives_both_branches() {
    let stack = start_stack("diamond", |_| {}).await;
    // Each task answers with its own id, so the join's input shows where its data came from.
    let server = agent(Arc::new(|call: &Value| {
        AgentReply::ok(json!({ "from": call["task_id"], "saw": call["dependencies"] }))
    }))
    .await;
    register_agent(&stack, "worker", &server, &["work"]).await;

    let id = submit(&stack, &diamond("work")).await;
    let workflow = wait_until_finished(&stack, &id).await;

    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    for t in ["a", "b", "c", "d"] {
        let task = task(&workflow, t);
        assert_eq!(task["status"], "succeeded");
        assert_eq!(task["agent"], "worker");
        assert_eq!(task["attempts"].as_array().map(Vec::len), Some(1));
        assert_eq!(task["output"]["from"], t);
        assert!(task["started_at"].is_string() && task["finished_at"].is_string());
    }
    let calls = server.calls();
    assert_eq!(calls.len(), 4, "each task runs once");
    let d = calls
        .iter()
        .find(|c| c.body["task_id"] == "d")
        .expect("d was called");
    assert_eq!(d.body["dependencies"]["b"]["from"], "b");
    assert_eq!(d.body["dependencies"]["c"]["from"], "c");
    assert_eq!(d.body["dependencies"].as_object().map(|m| m.len()), Some(2));
    let b = calls
        .iter()
        .find(|c| c.body["task_id"] == "b")
        .expect("b was called");
    assert_eq!(b.body["dependencies"]["a"]["from"], "a");
    assert_eq!(
        d.idempotency_key.as_deref(),
        Some(format!("default:{id}:d:1").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_agent_fails_the_workflow_with_the_error_on_the_task() {
    let stack = start_stack("fails", |_| {}).await;
    let healthy = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "ok": true })))).await;
    let broken = agent_replying(AgentReply::error(500, "model overloaded")).await;
    register_agent(&stack, "healthy", &healthy, &["work"]).await;
    register_agent(&stack, "broken", &broken, &["explode"]).await;

    let workflow = json!({
        "name": "breaks",
        "tasks": [
            { "id": "a", "capability": "work" },
            { "id": "b", "capability": "explode", "depends_on": ["a"] },
            { "id": "c", "capability": "work", "depends_on": ["b"] }
        ]
    });
    let id = submit(&stack, &workflow).await;
    let workflow = wait_until_finished(&stack, &id).await;

    assert_eq!(workflow["status"], "failed", "{workflow:#}");
    assert_eq!(workflow["failed_task"], "b");
    assert!(workflow["finished_at"].is_string());
    assert_eq!(task(&workflow, "a")["status"], "succeeded");
    let b = task(&workflow, "b");
    assert_eq!(b["status"], "failed");
    assert_eq!(b["agent"], "broken");
    assert_eq!(b["error"]["kind"], "http_status");
    assert_eq!(b["error"]["http_status"], 500);
    assert_eq!(b["error"]["retryable"], true);
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("model overloaded"));
    // The built-in policy: three attempts, each after a backoff, every one recorded.
    let attempts = b["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{b:#}");
    assert!(attempts.iter().all(|a| a["outcome"] == "failed"));
    assert!(attempts[0]["retry_delay_ms"].is_u64() && attempts[2]["retry_delay_ms"].is_null());
    assert_eq!(
        task(&workflow, "c")["status"],
        "skipped",
        "nothing runs behind a failure"
    );
    assert_eq!(healthy.calls().len(), 1);
    assert_eq!(broken.calls().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_no_agent_can_take_fails_with_a_clear_error() {
    let stack = start_stack("noagent", |_| {}).await;
    let id = submit(
        &stack,
        &json!({ "name": "orphan", "tasks": [{ "id": "t", "capability": "translate.klingon" }] }),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    let t = task(&workflow, "t");
    assert_eq!(t["error"]["kind"], "no_capable_agent");
    assert_eq!(
        t["error"]["message"],
        "no enabled agent offers capability `translate.klingon`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_agent_is_a_connection_failure() {
    let stack = start_stack("unreachable", |_| {}).await;
    let gone = ClosedPort::new();
    register_url(&stack, "gone", &gone.url, &["work"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "w", "tasks": [{ "id": "t", "capability": "work" }] }),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    assert_eq!(task(&workflow, "t")["error"]["kind"], "connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_outcome_is_learned_once_per_agent_and_task_type() {
    let stack = start_stack("learning", |_| {}).await;
    let server = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "ok": 1 })))).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let id = submit(&stack, &diamond("work")).await;
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );

    let stats = learned_stats(&stack, "worker", "work", 4).await;
    assert_eq!(stats.count, 4);
    assert_eq!(stats.successes, 4);
    assert_eq!(stats.recent.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_example_workflow_runs_on_the_example_agents() {
    let stack = start_stack("examples", |_| {}).await;
    let mut servers = Vec::new();
    for (name, capability, behaviour) in examples::all() {
        let server = agent(behaviour).await;
        register_agent(&stack, name, &server, &[capability]).await;
        servers.push(server);
    }
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(baton_local::project_root().join("examples/diamond.json"))
            .unwrap(),
    )
    .unwrap();
    let id = submit(&stack, &example).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    let report = &task(&workflow, "report")["output"];
    assert_eq!(report["sections"], 2);
    assert_eq!(report["parts"]["stats"]["words"], 11);
    assert_eq!(
        report["parts"]["shout"]["text"],
        "BATON ROUTES TASKS TO AGENTS. IT RETRIES, LEARNS AND CLEANS UP!"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wide_fan_out_and_join_runs_every_task_once() {
    let stack = start_stack("fanout", |_| {}).await;
    let server = agent(Arc::new(|call: &Value| {
        AgentReply::ok(json!({ "task": call["task_id"] }))
    }))
    .await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let width = 40;
    let mut tasks = vec![json!({ "id": "root", "capability": "work" })];
    let branches: Vec<String> = (0..width).map(|i| format!("branch-{i}")).collect();
    for id in &branches {
        tasks.push(json!({ "id": id, "capability": "work", "depends_on": ["root"] }));
    }
    tasks.push(json!({ "id": "join", "capability": "work", "depends_on": branches }));
    let id = submit(&stack, &json!({ "name": "fan", "tasks": tasks })).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    let calls = server.calls();
    assert_eq!(calls.len(), width + 2, "every task ran exactly once");
    let join = calls.iter().find(|c| c.body["task_id"] == "join").unwrap();
    assert_eq!(
        join.body["dependencies"].as_object().map(|d| d.len()),
        Some(width)
    );
}
