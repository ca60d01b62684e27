//! Shared contexts on the local stack: two workflows whose agents update one context at once
//! lose no update; the API's versions, budget and refusals.

use std::sync::Arc;

use baton_local::agents::AgentReply;
use baton_tests::*;
use serde_json::{json, Value};

const TASKS: usize = 6;

/// Marks its task as seen in the context it received.
fn tally(call: &Value) -> AgentReply {
    let key = format!(
        "{}-{}",
        call["workflow_id"].as_str().unwrap_or("?"),
        call["task_id"].as_str().unwrap_or("?")
    );
    AgentReply::ok(json!({
        "received_version": call["context"]["version"],
        "context_update": { "seen": { key: true } },
    }))
}

fn workflow(name: &str) -> Value {
    let tasks: Vec<Value> = (0..TASKS)
        .map(|i| json!({ "id": format!("t{i}"), "capability": "tally" }))
        .collect();
    json!({ "name": name, "context": "campaign", "tasks": tasks })
}

async fn context(stack: &baton_local::stack::LocalStack) -> Answer {
    get(stack, "/v1/contexts/campaign").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workflows_updating_one_context_at_once_lose_no_update() {
    let stack = start_stack("contexts", |_| {}).await;
    let server = agent(Arc::new(tally)).await;
    register_agent(&stack, "tally", &server, &["tally"]).await;

    // A workflow may not name a context that does not exist.
    let early = post(&stack, "/v1/workflows", &workflow("early").to_string()).await;
    assert_eq!(early.status, 400, "{:#}", early.body);
    assert_eq!(early.body["error"]["details"]["field"], "context");

    let created = request(
        &stack,
        reqwest::Method::PUT,
        "/v1/contexts/campaign",
        Some(r#"{"value": {"seen": {}}}"#),
        None,
    )
    .await;
    assert_eq!(
        (created.status, created.body["version"].as_u64()),
        (201, Some(1)),
        "{:#}",
        created.body
    );

    let (first_body, second_body) = (
        workflow("first").to_string(),
        workflow("second").to_string(),
    );
    let (first, second) = tokio::join!(
        post(&stack, "/v1/workflows", &first_body),
        post(&stack, "/v1/workflows", &second_body),
    );
    let ids: Vec<String> = [first, second]
        .iter()
        .map(|a| {
            assert_eq!(a.status, 202, "{:#}", a.body);
            a.body["workflow_id"].as_str().unwrap().to_string()
        })
        .collect();
    for id in &ids {
        assert_eq!(wait_until_finished(&stack, id).await["status"], "succeeded");
    }
    let shared = context(&stack).await;
    assert_eq!(shared.status, 200);
    let seen = shared.body["value"]["seen"].as_object().unwrap();
    assert_eq!(
        seen.len(),
        2 * TASKS,
        "every update kept: {:#}",
        shared.body
    );
    for id in &ids {
        for i in 0..TASKS {
            assert_eq!(seen.get(&format!("{id}-t{i}")), Some(&json!(true)));
        }
    }
    assert_eq!(
        shared.body["version"],
        1 + 2 * TASKS as u64,
        "one version per update"
    );
    // Each agent received the context, by name and version.
    let calls = server.calls();
    assert_eq!(calls.len(), 2 * TASKS, "each task called once");
    assert!(calls
        .iter()
        .all(|c| c.body["context"]["name"] == "campaign" && c.body["context"]["version"].is_u64()));

    // The API: versions, refusals, nothing changed by a refused request.
    let version = shared.body["version"].as_u64().unwrap();
    let etag = format!("\"{version}\"");
    let patch = |if_match: Option<String>, body: Value| {
        let stack = &stack;
        async move {
            let headers: Vec<(&str, &str)> = if_match
                .as_deref()
                .map(|v| ("if-match", v))
                .into_iter()
                .collect();
            request_with(
                stack,
                reqwest::Method::PATCH,
                "/v1/contexts/campaign",
                body,
                &headers,
            )
            .await
        }
    };
    assert_eq!(patch(None, json!({"x": 1})).await.status, 428);
    assert_eq!(
        patch(Some("\"1\"".into()), json!({"x": 1})).await.status,
        412
    );
    let patched = patch(
        Some(etag.clone()),
        json!({"audience": "developers", "seen": null}),
    )
    .await;
    assert_eq!(patched.status, 200, "{:#}", patched.body);
    assert_eq!(patched.body["value"], json!({ "audience": "developers" }));
    assert_eq!(patched.body["version"], version + 1);
    let big = json!({ "value": { "text": "x".repeat(40_000) } }).to_string();
    let refused = request(
        &stack,
        reqwest::Method::PUT,
        "/v1/contexts/campaign",
        Some(&big),
        None,
    )
    .await;
    assert_eq!(refused.status, 413, "{:#}", refused.body);
    let bad_ttl = request(
        &stack,
        reqwest::Method::PUT,
        "/v1/contexts/other",
        Some(r#"{"value": 1, "ttl_s": 0}"#),
        None,
    )
    .await;
    assert_eq!(bad_ttl.status, 400);
    assert_eq!(
        context(&stack).await.body["version"],
        version + 1,
        "refusals change nothing"
    );
    assert_eq!(get(&stack, "/v1/contexts/other").await.status, 404);

    // Another tenant's context answers as one that exists nowhere.
    let theirs = request(
        &stack,
        reqwest::Method::GET,
        "/v1/contexts/campaign",
        None,
        Some("someone-else"),
    )
    .await;
    assert_eq!(theirs.status, 404);

    let deleted = request_with(
        &stack,
        reqwest::Method::DELETE,
        "/v1/contexts/campaign",
        json!(null),
        &[("if-match", &format!("\"{}\"", version + 1))],
    )
    .await;
    assert_eq!(deleted.status, 200, "{:#}", deleted.body);
    assert_eq!(context(&stack).await.status, 404);
}
