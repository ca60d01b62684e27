//! Payloads of every size: an output past the item's inline limit goes to the payload bucket
//! and comes back whole to its dependent and to the task's view; one past the output limit
//! fails the task at once, never by lease expiry; one whose stored form outgrows what was sent
//! (numbers written `1e15` are stored as `1000000000000000`) is measured as stored and kept
//! whole.

use aws_sdk_dynamodb::types::AttributeValue;
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
    assert!(
        shown["bytes"].as_u64().unwrap() > 5 * 1024 * 1024,
        "{shown}"
    );
    let whole = get(&stack, &format!("/v1/workflows/{id}/tasks/make")).await;
    assert_eq!(whole.status, 200);
    assert_eq!(
        whole.body["output"]["blob"].as_str().map(str::len),
        Some(big.len())
    );
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
    let numbers = std::iter::repeat_n("1e15", 25_000)
        .collect::<Vec<_>>()
        .join(",");
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
    assert_eq!(
        whole.body["output"]["values"].as_array().map(Vec::len),
        Some(25_000)
    );
}

/// The retention this test runs under: short enough to pass three times within the test.
const SHORT_RETENTION_S: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_paused_past_the_retention_resumes_with_every_output() {
    let stack = start_stack("payload-kept", |options| {
        recover_quickly(options);
        options
            .env_overrides
            .insert("RETENTION_SECONDS".into(), SHORT_RETENTION_S.to_string());
    })
    .await;
    let blob = text(40 * 1024);
    let maker = GatedAgent::replying(json!({ "blob": blob })).await;
    let taker = agent(std::sync::Arc::new(|call: &Value| {
        let length = |v: &Value| v.as_str().map_or(0, str::len);
        AgentReply::ok(json!({
            "received": length(&call["dependencies"]["make"]["blob"]),
            "input": length(&call["input"]["note"]),
        }))
    }))
    .await;
    register_url(&stack, "maker", &maker.url, &["make"]).await;
    register_agent(&stack, "taker", &taker, &["take"]).await;
    let quick = agent_replying(AgentReply::ok(json!({ "done": true }))).await;
    register_agent(&stack, "quick", &quick, &["quick"]).await;
    // A workflow that ends at once: its items and objects are what the retention removes.
    let ended = submit(
        &stack,
        &json!({ "name": "ended", "tasks": [
            { "id": "q", "capability": "quick", "input": { "note": blob } }] }),
    )
    .await;
    wait_until_finished(&stack, &ended).await;
    // Both inputs go to the bucket; so does the output of `make`, once it ends.
    let id = submit(
        &stack,
        &json!({ "name": "kept", "tasks": [
            { "id": "make", "capability": "make", "input": { "note": blob } },
            { "id": "take", "capability": "take", "depends_on": ["make"],
              "input": { "note": blob } },
        ]}),
    )
    .await;
    eventually("make running", || async {
        let view = workflow_view(&stack, &id).await;
        (task(&view, "make")["status"] == "running").then_some(())
    })
    .await;
    let paused = post(&stack, &format!("/v1/workflows/{id}/pause"), "").await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    maker.open();
    eventually("make succeeded", || async {
        let view = workflow_view(&stack, &id).await;
        (task(&view, "make")["status"] == "succeeded").then_some(())
    })
    .await;

    // Three retentions pass while it is paused, with the repair sweeping. Each time the
    // repair has kept the workflow, DynamoDB's TTL and the bucket's expiry are applied as AWS
    // would at that moment: whatever was not kept within a retention is gone. (Applied right
    // after a keep, so a repair slowed by a busy machine cannot make the test flaky.)
    let retention = std::time::Duration::from_secs(SHORT_RETENTION_S);
    let paused_at = std::time::Instant::now();
    let mut removed = (0, 0);
    let mut kept_at = kept_at_of(&stack, &id).await;
    while paused_at.elapsed() < 3 * retention {
        kept_at = eventually("the repair keeps the paused workflow again", || async {
            let now = kept_at_of(&stack, &id).await;
            (now > kept_at).then_some(now)
        })
        .await;
        let (items, objects) = stack
            .expire(baton_types::clock::now_ms())
            .await
            .expect("expiry");
        removed = (removed.0 + items, removed.1 + objects);
    }
    assert!(
        removed.0 > 0 && removed.1 > 0,
        "the expiry removed what had ended: {removed:?}"
    );
    let gone = get(&stack, &format!("/v1/workflows/{ended}")).await;
    assert_eq!(
        gone.status, 404,
        "an ended workflow expires: {:?}",
        gone.body
    );

    let resumed = post(&stack, &format!("/v1/workflows/{id}/resume"), "").await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{:#}", workflow["tasks"]);
    let took = &task(&workflow, "take")["output"];
    assert_eq!(took["received"], blob.len(), "{took}");
    assert_eq!(took["input"], blob.len(), "{took}");
    let made = get(&stack, &format!("/v1/workflows/{id}/tasks/make")).await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    assert_eq!(
        made.body["output"]["blob"].as_str().map(str::len),
        Some(blob.len())
    );
}

/// When the repair last kept the workflow from expiring (its creation at first).
async fn kept_at_of(stack: &baton_local::stack::LocalStack, id: &str) -> i64 {
    let item = stack
        .clients
        .dynamodb
        .get_item()
        .table_name(&stack.settings.state_table)
        .key("pk", AttributeValue::S(format!("default#WF#{id}")))
        .key("sk", AttributeValue::S("WORKFLOW".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("the workflow record")
        .item
        .expect("a workflow record");
    let at = item.get("kept_at").or_else(|| item.get("created_at"));
    at.and_then(|v| v.as_n().ok()?.parse().ok())
        .expect("a time")
}
