//! Payloads of every size: an output past the item's inline limit goes to the payload bucket
//! and comes back whole to its dependent and to the task's view; one past the output limit
//! fails the task at once, never by lease expiry; one whose stored form outgrows what was sent
//! (numbers written `1e15` are stored as `1000000000000000`) is measured as stored and kept
//! whole.

use baton_local::agents::AgentReply;
use baton_tests::*;
use serde_json::{json, Value};

/// A string of `bytes` characters.
fn text(bytes: usize) -> String {
    "x".repeat(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_five_megabyte_output_reaches_its_dependent_whole() {
    let stack = start_stack("payload-5mb", |_| {}).await;
    let big = text(5 * 1024 * 1024);
    let producer = agent_replying(AgentReply::ok(json!({ "blob": big }))).await;
    let consumer = agent(std::sync::Arc::new(|call: &Value| {
        let got = call["dependencies"]["make"]["blob"]
            .as_str()
            .map_or(0, str::len);
        AgentReply::ok(json!({ "received": got }))
    }))
    .await;
    register_agent(&stack, "producer", &producer, &["make"]).await;
    register_agent(&stack, "consumer", &consumer, &["take"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "big", "tasks": [
            { "id": "make", "capability": "make" },
            { "id": "take", "capability": "take", "depends_on": ["make"] },
        ]}),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{:#}", workflow["tasks"]);
    assert_eq!(
        task(&workflow, "take")["output"]["received"],
        5 * 1024 * 1024
    );
    // The workflow's view shows its size; the task's own URL serves it whole.
    let shown = &task(&workflow, "make")["output_truncated"];
    assert!(shown["bytes"].as_u64().unwrap() > 5 * 1024 * 1024, "{shown}");
    let whole = get(&stack, &format!("/v1/workflows/{id}/tasks/make")).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body["output"]["blob"].as_str().map(str::len), Some(big.len()));
    // The item itself stays small: the output is in the bucket.
    for item in table_items(&stack, &stack.settings.state_table).await {
        let size: usize = format!("{item:?}").len();
        assert!(size < 64 * 1024, "an item of {size} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_output_past_the_limit_fails_at_once_and_is_not_retried() {
    let stack = start_stack("payload-7mb", |_| {}).await;
    let huge = agent_replying(AgentReply::ok(json!({ "blob": text(7 * 1024 * 1024) }))).await;
    // 25,000 numbers written `1e15` take 125 KB as sent, more as stored, with a 60 KB input
    // beside them on the task's item: what once made every write of the result fail.
    let numbers = std::iter::repeat_n("1e15", 25_000).collect::<Vec<_>>().join(",");
    let grows = agent(std::sync::Arc::new(move |_: &Value| {
        AgentReply::raw(200, format!("{{\"values\":[{numbers}]}}"))
    }))
    .await;
    register_agent(&stack, "huge", &huge, &["huge"]).await;
    register_agent(&stack, "grows", &grows, &["grows"]).await;
    let retrying = json!({ "max_attempts": 3, "base_ms": 10 });
    let id = submit(
        &stack,
        &json!({ "name": "too big", "tasks": [
            { "id": "huge", "capability": "huge", "retry": retrying },
            { "id": "grows", "capability": "grows", "retry": retrying,
              "input": { "pad": text(60 * 1024) } },
        ]}),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    let failed = &task(&workflow, "huge")["error"];
    assert_eq!(failed["kind"], "output_too_large", "{failed}");
    assert_eq!(failed["retryable"], false);
    assert_eq!(huge.calls().len(), 1, "never called again");
    // The numbers' stored form fits the bucket: the task succeeds, whole.
    let grew = task(&workflow, "grows");
    assert_eq!(grew["status"], "succeeded", "{grew:#}");
    assert_eq!(grows.calls().len(), 1);
    let whole = get(&stack, &format!("/v1/workflows/{id}/tasks/grows")).await;
    assert_eq!(whole.body["output"]["values"].as_array().map(Vec::len), Some(25_000));
}
