//! Self-improvement on the local stack: a concurrency-limited agent with a backlog yields the
//! "raise max_concurrency" suggestion; nothing changes until a person makes the change through
//! the API and marks it applied; the report then shows the measured drop in queue wait.

use std::sync::Arc;
use std::time::Duration;

use baton_local::agents::AgentReply;
use baton_tests::*;
use serde_json::{json, Value};

const TASKS: usize = 12;

fn backlog(name: &str) -> Value {
    let tasks: Vec<Value> = (0..TASKS)
        .map(|i| json!({ "id": format!("t{i}"), "capability": "write", "input": { "n": i } }))
        .collect();
    json!({ "name": name, "tasks": tasks })
}

async fn run_backlog(stack: &baton_local::stack::LocalStack, name: &str, learned: usize) {
    let id = submit(stack, &backlog(name)).await;
    assert_eq!(wait_until_finished(stack, &id).await["status"], "succeeded");
    eventually("every call learned", || async {
        let answer = get(stack, "/v1/memory/recent?agent=writer&limit=100").await;
        (answer.body["results"].as_array()?.len() >= learned).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_behind_a_concurrency_limit_is_suggested_applied_by_a_person_and_measured() {
    let stack = start_stack("improvements", |_| {}).await;
    let writer = agent(Arc::new(|_: &Value| {
        AgentReply::ok(json!({ "text": "done" })).after(Duration::from_millis(150))
    }))
    .await;
    let registration = json!({
        "name": "writer",
        "endpoint": writer.url,
        "capabilities": ["write"],
        "max_concurrency": 1,
        "timeout_ms": 5000,
    });
    let answer = post(&stack, "/v1/agents", &registration.to_string()).await;
    assert_eq!(answer.status, 201, "{:#}", answer.body);
    run_backlog(&stack, "before", TASKS).await;

    let analysis = post(&stack, "/v1/improvements/analyze", r#"{"window_hours": 1}"#).await;
    assert_eq!(analysis.status, 200, "{:#}", analysis.body);
    assert!(analysis.body["calls"].as_u64().unwrap() >= TASKS as u64);
    let suggestions = analysis.body["suggestions"].as_array().unwrap().clone();
    let raise = suggestions
        .iter()
        .find(|s| s["rule"] == "raise_max_concurrency" && s["subject"] == "writer")
        .unwrap_or_else(|| panic!("raise max_concurrency in {suggestions:#?}"))
        .clone();
    assert_eq!(
        (raise["status"].as_str(), raise["area"].as_str()),
        (Some("open"), Some("bottleneck"))
    );
    assert!(raise["evidence"]["window_start"].is_i64(), "{raise:#}");
    let change = &raise["change"];
    assert_eq!(
        (change["method"].as_str(), change["path"].as_str()),
        (Some("PATCH"), Some("/v1/agents/writer"))
    );
    assert_eq!(change["body"]["max_concurrency"], 2);

    // Found again, it is the same suggestion, refreshed: not a second one.
    let again = post(&stack, "/v1/improvements/analyze", r#"{"window_hours": 1}"#).await;
    let open = get(&stack, "/v1/improvements?status=open").await;
    let same: Vec<&Value> = open.body["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["rule"] == "raise_max_concurrency")
        .collect();
    assert_eq!((again.status, same.len()), (200, 1), "{:#}", open.body);
    assert_eq!(same[0]["id"], raise["id"]);

    // The analysis found a pattern too: the writer is the preferred agent, from now on.
    let patterns = get(&stack, "/v1/memory/patterns/write").await;
    let history = patterns.body["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "found once, kept once: {history:#?}");
    assert_eq!(
        (history[0]["kind"].as_str(), history[0]["subject"].as_str()),
        (Some("preferred_agent"), Some("writer"))
    );
    assert!(history[0]["valid_to_ms"].is_null(), "it still holds");

    // Baton applied nothing: the agent is as it was.
    assert_eq!(agent_view(&stack, "writer").await["max_concurrency"], 1);

    // A person makes the change, exactly as suggested, and says so.
    let headers: Vec<(String, String)> = change["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_string()))
        .collect();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let made = request_with(
        &stack,
        reqwest::Method::PATCH,
        "/v1/agents/writer",
        change["body"].clone(),
        &headers,
    )
    .await;
    assert_eq!(made.status, 200, "{:#}", made.body);
    assert_eq!(agent_view(&stack, "writer").await["max_concurrency"], 2);
    let id = raise["id"].as_str().unwrap();
    let marked = post(&stack, &format!("/v1/improvements/{id}/applied"), "").await;
    assert_eq!(
        (marked.status, marked.body["status"].as_str()),
        (200, Some("applied")),
        "{:#}",
        marked.body
    );
    let twice = post(&stack, &format!("/v1/improvements/{id}/applied"), "").await;
    assert_eq!(twice.status, 200, "marking twice changes nothing");
    let dismissed = post(&stack, &format!("/v1/improvements/{id}/dismiss"), "").await;
    assert_eq!(dismissed.status, 409, "{:#}", dismissed.body);

    // The same work again: the report measures the queue wait before and after.
    run_backlog(&stack, "after", 2 * TASKS).await;
    // The before-window grows with the time since the change, up to the analysis window, until
    // it holds enough of the first backlog's calls (which waited up to 30 s each).
    let impact = patiently("the impact measured", || async {
        let report = get(&stack, "/v1/improvements/report").await;
        assert_eq!(report.status, 200, "{:#}", report.body);
        let impacts = report.body["impacts"].as_array()?.clone();
        let ours = impacts.into_iter().find(|s| s["id"] == id)?;
        assert_eq!(report.body["counts"]["applied"], 1);
        Some(ours["impact"].clone())
    })
    .await;
    assert_eq!(impact["metric"]["kind"], "queue_wait_p50", "{impact:#}");
    let (before, after) = (
        impact["before"].as_f64().unwrap(),
        impact["after"].as_f64().unwrap(),
    );
    assert!(after < before, "the queue wait dropped: {impact:#}");
    assert!(impact["change"].as_f64().unwrap() < 0.0);
    assert!(
        impact["before_calls"].as_u64().unwrap() >= 10
            && impact["after_calls"].as_u64().unwrap() >= 10
    );

    // Bad input changes nothing.
    for body in [
        r#"{"window_hours": 0}"#,
        r#"{"window_hours": -1}"#,
        r#"{"window_hours": 1000}"#,
        r#"{"window_hours": "a day"}"#,
        r#"{"window": 24}"#,
    ] {
        let answer = post(&stack, "/v1/improvements/analyze", body).await;
        assert_eq!(answer.status, 400, "{body}: {:#}", answer.body);
    }
    for (path, status) in [
        ("/v1/improvements?status=done", 400),
        ("/v1/improvements?priority=urgent", 400),
    ] {
        assert_eq!(get(&stack, path).await.status, status, "{path}");
    }
    let unknown = post(&stack, "/v1/improvements/0000000000000000-1/dismiss", "").await;
    assert_eq!(unknown.status, 404);
    // Another tenant's suggestion answers as one that exists nowhere.
    let other = request(
        &stack,
        reqwest::Method::POST,
        &format!("/v1/improvements/{id}/dismiss"),
        Some(""),
        Some("someone-else"),
    )
    .await;
    assert_eq!(other.status, 404, "{:#}", other.body);
    let theirs = request(
        &stack,
        reqwest::Method::GET,
        "/v1/improvements",
        None,
        Some("someone-else"),
    )
    .await;
    assert_eq!(theirs.body["suggestions"], json!([]));
}

/// `eventually`, for a condition that waits on wall time passing: up to four minutes.
async fn patiently<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..960 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tenants_analyst_receives_the_evidence_and_its_suggestions_are_kept_as_its_own() {
    let stack = start_stack("analyst", |_| {}).await;
    let writer = agent_replying(AgentReply::ok(json!({ "text": "done" }))).await;
    register_agent(&stack, "writer", &writer, &["write"]).await;
    run_backlog(&stack, "work", TASKS).await;
    let advice = json!({ "suggestions": [
        {
            "subject": "writer",
            "title": "Give writer a shorter prompt",
            "area": "optimisation",
            "priority": "low",
            "expected_impact": "Fewer tokens per call",
            "evidence": { "seen": "long prompts" },
            "change": { "method": "PATCH", "path": "/v1/agents/writer", "body": { "timeout_ms": 9000 } },
            "metric": { "kind": "success_rate", "agent": "writer" },
        },
        { "title": "Somewhere else", "area": "optimisation", "priority": "low",
          "expected_impact": "none", "metric": { "kind": "success_rate", "agent": "writer" },
          "change": { "method": "POST", "path": "https://elsewhere.example/v1/x" } },
    ]});
    let analyst = agent_replying(AgentReply::ok(advice)).await;
    register_agent(&stack, "analyst", &analyst, &["improvements.analyze"]).await;
    let before = agent_view(&stack, "writer").await;

    let analysis = post(&stack, "/v1/improvements/analyze", r#"{"window_hours": 1}"#).await;
    assert_eq!(analysis.status, 200, "{:#}", analysis.body);
    let workflow = analysis.body["analyst_workflow_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the analyst is asked: {:#}", analysis.body))
        .to_string();
    assert_eq!(
        wait_until_finished(&stack, &workflow).await["status"],
        "succeeded"
    );
    let digest = &analyst.calls()[0].body["input"];
    let writer_figures = digest["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "writer")
        .unwrap_or_else(|| panic!("the writer in {digest:#}"));
    assert_eq!(writer_figures["calls"], TASKS, "{digest:#}");
    assert_eq!(writer_figures["succeeded"], TASKS);

    let theirs = eventually("the analyst's suggestion is kept", || async {
        let listed = get(&stack, "/v1/improvements?status=open").await.body;
        let theirs: Vec<Value> = listed["suggestions"]
            .as_array()?
            .iter()
            .filter(|s| s["analyzer"] == "analyst")
            .cloned()
            .collect();
        (!theirs.is_empty()).then_some(theirs)
    })
    .await;
    assert_eq!(
        theirs.len(),
        1,
        "the one off Baton's API is left out: {theirs:#?}"
    );
    assert_eq!(
        (theirs[0]["rule"].as_str(), theirs[0]["subject"].as_str()),
        (Some("advice"), Some("writer"))
    );
    assert_eq!(theirs[0]["change"]["body"]["timeout_ms"], 9000);
    // Only suggested: the writer is as it was.
    assert_eq!(agent_view(&stack, "writer").await, before);

    // Asked again, the analyst's same suggestion is refreshed, not doubled.
    let again = post(&stack, "/v1/improvements/analyze", r#"{"window_hours": 1}"#).await;
    let workflow = again.body["analyst_workflow_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_until_finished(&stack, &workflow).await;
    let listed = get(&stack, "/v1/improvements").await.body;
    let count = listed["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["analyzer"] == "analyst")
        .count();
    assert_eq!(count, 1, "{listed:#}");
}
