//! What Baton remembers, on the local stack: recent results after mixed outcomes, relevant
//! memories, and refusals of questions that name nothing.

use std::sync::Arc;

use baton_local::agents::AgentReply;
use baton_tests::*;
use serde_json::{json, Value};

/// A writer that fails any topic naming "broken" with a 500, and writes about the rest.
fn writer(call: &Value) -> AgentReply {
    let topic = call["input"]["topic"].as_str().unwrap_or_default();
    if topic.contains("broken") {
        AgentReply::error(500, "upstream 503 after 1200 ms")
    } else {
        AgentReply::ok(json!({ "text": format!("an article about {topic}") }))
    }
}

async fn memory(stack: &baton_local::stack::LocalStack, query: &str) -> Answer {
    get(stack, &format!("/v1/memory/{query}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recent_results_and_relevant_memories_follow_mixed_outcomes() {
    let stack = start_stack("memory", |_| {}).await;
    let server = agent(Arc::new(writer)).await;
    register_agent(&stack, "writer", &server, &["write"]).await;
    let once = json!({ "max_attempts": 1 });
    let workflow = json!({
        "name": "articles",
        "tasks": [
            { "id": "revenue", "capability": "write", "input": { "topic": "the quarterly revenue report" } },
            { "id": "weather", "capability": "write", "input": { "topic": "the weather in Lisbon" } },
            { "id": "pipeline", "capability": "write", "retry": once, "input": { "topic": "a broken pipeline" } },
        ],
    });
    let id = submit(&stack, &workflow).await;
    assert_eq!(wait_until_finished(&stack, &id).await["status"], "failed");

    // Learning is off the critical path: the results appear once learn has run.
    let recent = eventually("three results remembered", || async {
        let answer = memory(&stack, "recent?task_type=write").await;
        let results = answer.body["results"].as_array()?.clone();
        (answer.status == 200 && results.len() == 3).then_some(results)
    })
    .await;
    let times: Vec<&str> = recent
        .iter()
        .map(|r| r["finished_at"].as_str().unwrap())
        .collect();
    let mut newest_first = times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first, "newest first");
    for result in &recent {
        assert_eq!(
            (result["agent"].as_str(), result["workflow_id"].as_str()),
            (Some("writer"), Some(id.as_str()))
        );
        assert!(
            result["duration_ms"].is_u64() && result["queue_wait_ms"].is_u64(),
            "{result:#}"
        );
        let preview = result["input_preview"].as_str().expect("an input preview");
        assert!(preview.len() <= 160, "{preview}");
    }
    let revenue = recent
        .iter()
        .find(|r| r["task_id"] == "revenue")
        .expect("revenue");
    assert_eq!(revenue["outcome"], "succeeded");
    assert!(revenue["output_preview"]
        .as_str()
        .unwrap()
        .contains("quarterly revenue"));

    let failed = memory(&stack, "recent?outcome=failed").await;
    assert_eq!(failed.status, 200);
    let failed = failed.body["results"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(
        (failed[0]["task_id"].as_str(), failed[0]["failure"].as_str()),
        (Some("pipeline"), Some("http_status"))
    );
    let message = failed[0]["failure_message"]
        .as_str()
        .expect("a failure message");
    assert!(
        !message.chars().any(|c| c.is_ascii_digit()),
        "numbers normalised: {message}"
    );

    let one = memory(&stack, "recent?agent=writer&limit=1").await;
    assert_eq!(one.body["results"].as_array().unwrap().len(), 1);

    // Patterns: what was learned for the task type, per agent, with the failures that recur.
    let patterns = memory(&stack, "patterns/write").await;
    assert_eq!(patterns.status, 200, "{:#}", patterns.body);
    let writer_pattern = &patterns.body["agents"][0];
    assert_eq!(
        (
            writer_pattern["agent"].as_str(),
            writer_pattern["calls"].as_u64()
        ),
        (Some("writer"), Some(3))
    );
    assert!(
        (writer_pattern["success_rate"].as_f64().unwrap() - 0.667).abs() < 0.01,
        "{writer_pattern:#}"
    );
    assert!(writer_pattern["latency_p50_ms"].is_u64() && writer_pattern["latency_p90_ms"].is_u64());
    let failures = patterns.body["failure_patterns"].as_array().unwrap();
    assert_eq!(
        (
            failures.len(),
            failures[0]["kind"].as_str(),
            failures[0]["count"].as_u64()
        ),
        (1, Some("http_status"), Some(1))
    );
    assert_eq!(patterns.body["route_now"]["agent"], "writer");
    assert_eq!(patterns.body["history"], json!([]), "no analysis has run");

    // Relevant memories: the revenue article shares the query's words; the weather does not.
    let relevant = memory(
        &stack,
        "relevant?q=revenue%20report%20summary&task_type=write",
    )
    .await;
    assert_eq!(relevant.status, 200, "{:#}", relevant.body);
    let relevant = relevant.body["results"].as_array().unwrap().clone();
    assert_eq!(
        relevant.first().map(|r| &r["task_id"]),
        Some(&json!("revenue")),
        "{relevant:#?}"
    );
    assert!(relevant.iter().all(|r| r["task_id"] != "weather"));
    assert!(relevant[0]["relevance"].as_f64().unwrap() > 0.0);

    // A task that asks for memories: its agent receives the most relevant past results.
    let follow_up = json!({
        "name": "follow-up",
        "tasks": [{
            "id": "next",
            "capability": "write",
            "memory": { "relevant": 2 },
            "input": { "topic": "next quarter's revenue report" },
        }],
    });
    let next = submit(&stack, &follow_up).await;
    assert_eq!(
        wait_until_finished(&stack, &next).await["status"],
        "succeeded"
    );
    let call = server
        .calls()
        .into_iter()
        .find(|c| c.body["task_id"] == "next")
        .expect("the follow-up's call");
    let memories = call.body["memories"]
        .as_array()
        .expect("memories in the call")
        .clone();
    assert!(!memories.is_empty() && memories.len() <= 2, "{memories:#?}");
    assert_eq!(memories[0]["task_id"], "revenue", "{memories:#?}");
    assert!(memories[0]["output_preview"]
        .as_str()
        .unwrap()
        .contains("revenue"));
    for bad in [
        json!({ "relevant": 0 }),
        json!({ "relevant": 21 }),
        json!({ "recent": 2 }),
    ] {
        let workflow = json!({
            "name": "bad-memory",
            "tasks": [{ "id": "t", "capability": "write", "memory": bad }],
        });
        let answer = post(&stack, "/v1/workflows", &workflow.to_string()).await;
        assert_eq!(answer.status, 400, "{bad}: {:#}", answer.body);
    }

    // Questions that name nothing, or ask badly, are refused and change nothing.
    for (query, status) in [
        ("recent?task_type=never-learned", 404),
        ("recent?agent=nobody", 404),
        ("recent?agent=a%20b", 400),
        ("recent?outcome=maybe", 400),
        ("recent?limit=0", 400),
        ("recent?limit=101", 400),
        ("relevant?task_type=write", 400),
        ("relevant?q=x&limit=21", 400),
        ("patterns-nowhere", 404),
        ("patterns/never-learned", 404),
    ] {
        let answer = memory(&stack, query).await;
        assert_eq!(answer.status, status, "{query}: {:#}", answer.body);
        assert!(
            answer.body["error"]["message"].is_string(),
            "{query}: {:#}",
            answer.body
        );
    }

    // Another tenant remembers nothing of these.
    let other = request(
        &stack,
        reqwest::Method::GET,
        "/v1/memory/recent",
        None,
        Some("someone-else"),
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.body["results"], json!([]));
    let other = request(
        &stack,
        reqwest::Method::GET,
        "/v1/memory/recent?task_type=write",
        None,
        Some("someone-else"),
    )
    .await;
    assert_eq!(other.status, 404);
}

/// `count` tasks of type `report` for `capability`, each on `topic`, tried once.
fn reports(name: &str, capability: &str, topic: &str, count: usize) -> Value {
    let tasks: Vec<Value> = (0..count)
        .map(|i| {
            json!({ "id": format!("{capability}{i}"), "capability": capability, "type": "report",
                    "retry": { "max_attempts": 1 }, "input": { "topic": topic } })
        })
        .collect();
    json!({ "name": name, "tasks": tasks })
}

async fn run_reports(stack: &baton_local::stack::LocalStack, workflow: &Value, learned: usize) {
    let id = submit(stack, workflow).await;
    wait_until_finished(stack, &id).await;
    eventually("every call learned", || async {
        let answer = memory(stack, "recent?task_type=report&limit=100").await;
        (answer.body["results"].as_array()?.len() >= learned).then_some(())
    })
    .await;
}

/// The patterns of `report`, as the analysis leaves them: `(kind, subject, closed)`.
async fn analysed_patterns(stack: &baton_local::stack::LocalStack) -> Vec<(String, String, bool)> {
    let analysis = post(stack, "/v1/improvements/analyze", r#"{"window_hours": 1}"#).await;
    assert_eq!(analysis.status, 200, "{:#}", analysis.body);
    let patterns = memory(stack, "patterns/report").await.body;
    let mut history: Vec<(String, String, bool)> = patterns["history"]
        .as_array()
        .unwrap_or_else(|| panic!("a history: {patterns:#}"))
        .iter()
        .map(|p| {
            let text = |field: &str| p[field].as_str().unwrap_or_default().to_string();
            (text("kind"), text("subject"), p["valid_to_ms"].is_i64())
        })
        .collect();
    history.sort();
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pattern_that_stops_holding_is_closed_and_the_history_keeps_it() {
    let stack = start_stack("patterns", |_| {}).await;
    let quick = agent(Arc::new(writer)).await;
    let slow = agent(Arc::new(|call: &Value| {
        // A second slower: a loaded machine does not make the quick one slower than it.
        writer(call).after(std::time::Duration::from_millis(1000))
    }))
    .await;
    register_agent(&stack, "quick", &quick, &["quick"]).await;
    register_agent(&stack, "slow", &slow, &["slow"]).await;
    let mut both = reports("both", "quick", "sales", 5);
    let slow_tasks = reports("", "slow", "sales", 5)["tasks"].clone();
    both["tasks"]
        .as_array_mut()
        .unwrap()
        .extend(slow_tasks.as_array().unwrap().iter().cloned());
    run_reports(&stack, &both, 10).await;
    // Both always succeed; the quick one answers sooner, so it is the one to route to.
    assert_eq!(
        analysed_patterns(&stack).await,
        [("preferred_agent".to_string(), "quick".to_string(), false)]
    );

    run_reports(&stack, &reports("broken", "quick", "a broken feed", 4), 14).await;
    let history = analysed_patterns(&stack).await;
    let kinds: Vec<(&str, &str, bool)> = history
        .iter()
        .map(|(kind, subject, closed)| (kind.as_str(), subject.as_str(), *closed))
        .collect();
    assert_eq!(
        kinds,
        [
            ("preferred_agent", "quick", true),
            ("preferred_agent", "slow", false),
            (
                "recurring_failure",
                r#"http_status: agent answered HTTP #: {"error":"upstream # after # ms"}"#,
                false
            ),
        ],
        "quick stopped being preferred: closed, not overwritten; slow and the failure opened"
    );
}
