//! Workflow controls (cancel, pause, resume, retry), history, the list, the graph and the task
//! view, end to end on the local stack with real HTTP agents.

use std::sync::{Arc, Mutex};

use baton_local::agents::AgentReply;
use baton_tests::*;
use serde_json::{json, Value};
use tokio::sync::watch;

/// An agent that holds every call until the test opens its gate, so a task stays running for
/// exactly as long as a test needs it to.
struct GatedAgent {
    url: String,
    calls: Arc<Mutex<Vec<Value>>>,
    gate: watch::Sender<bool>,
}

impl GatedAgent {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (gate, opened) = watch::channel(false);
        let recorded = calls.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let recorded = recorded.clone();
            let mut opened = opened.clone();
            async move {
                let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let task = call["task_id"].clone();
                recorded.lock().expect("calls").push(call);
                let _ = opened.wait_for(|open| *open).await;
                axum::Json(json!({ "done": task }))
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GatedAgent { url, calls, gate }
    }

    fn open(&self) {
        let _ = self.gate.send(true);
    }

    fn called(&self, task: &str) -> usize {
        self.calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|c| c["task_id"] == task)
            .count()
    }
}

async fn register_gated(stack: &baton_local::stack::LocalStack, name: &str, agent: &GatedAgent) {
    let body =
        json!({ "name": name, "endpoint": agent.url, "capabilities": [name], "timeout_ms": 60000 });
    let answer = post(stack, "/v1/agents", &body.to_string()).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
}

async fn wait_for_status(
    stack: &baton_local::stack::LocalStack,
    id: &str,
    task_id: &str,
    status: &str,
) -> Value {
    eventually(&format!("task {task_id} {status}"), || async {
        let view = get(stack, &format!("/v1/workflows/{id}")).await.body;
        (task(&view, task_id)["status"] == status).then_some(view)
    })
    .await
}

async fn control(stack: &baton_local::stack::LocalStack, id: &str, action: &str) -> Answer {
    post(stack, &format!("/v1/workflows/{id}/{action}"), "").await
}

/// a (gated) → b, c (quick) → d (quick).
fn gated_diamond() -> Value {
    json!({
        "name": "gated-diamond",
        "tasks": [
            { "id": "a", "capability": "gate" },
            { "id": "b", "capability": "work", "depends_on": ["a"] },
            { "id": "c", "capability": "work", "depends_on": ["a"] },
            { "id": "d", "capability": "work", "depends_on": ["b", "c"] }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_diamond_lets_its_running_task_finish_and_starts_nothing_until_resumed() {
    let stack = start_stack("pause", |_| {}).await;
    let gate = GatedAgent::start().await;
    let worker = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "ok": true })))).await;
    register_gated(&stack, "gate", &gate).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;

    let id = submit(&stack, &gated_diamond()).await;
    wait_for_status(&stack, &id, "a", "running").await;
    let paused = control(&stack, &id, "pause").await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body["status"], "paused");
    assert_eq!(paused.body["changed"], true);
    let again = control(&stack, &id, "pause").await;
    assert_eq!(
        (again.status, &again.body["changed"]),
        (200, &json!(false)),
        "two pauses are one"
    );

    // The running task finishes and keeps its result; its dependents are released but held.
    gate.open();
    let view = eventually("a's dependents queued and held", || async {
        let view = get(&stack, &format!("/v1/workflows/{id}")).await.body;
        let held =
            |t: &str| task(&view, t)["status"] == "queued" && task(&view, t)["hold"] == "pause";
        (held("b") && held("c")).then_some(view)
    })
    .await;
    assert_eq!(view["status"], "paused");
    assert_eq!(task(&view, "a")["status"], "succeeded");
    assert_eq!(task(&view, "a")["output"]["done"], "a");
    assert_eq!(task(&view, "d")["status"], "waiting");
    assert!(worker.calls().is_empty(), "nothing started while paused");

    let running = control(&stack, &id, "resume").await;
    assert_eq!(running.status, 200, "{:?}", running.body);
    assert_eq!(running.body["status"], "running");
    assert_eq!(running.body["tasks"]["released"], 3, "{:?}", running.body);
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    assert_eq!(gate.called("a"), 1);
    assert_eq!(worker.calls().len(), 3, "b, c and d ran once each");

    let resumed_again = control(&stack, &id, "resume").await;
    assert_eq!(resumed_again.status, 409);
    assert_eq!(
        resumed_again.body["error"]["details"]["status"],
        "succeeded"
    );

    let history = get(&stack, &format!("/v1/workflows/{id}/history")).await;
    assert_eq!(history.status, 200);
    let events: Vec<&str> = history.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(events.first(), Some(&"submitted"));
    assert_eq!(events.last(), Some(&"finished"));
    for event in ["paused", "resumed", "released", "claimed", "succeeded"] {
        assert!(events.contains(&event), "{event} in {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_fan_out_cancels_what_has_not_started_and_ends_when_its_running_task_does() {
    let stack = start_stack("cancel", |_| {}).await;
    let gate = GatedAgent::start().await;
    let worker = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "ok": true })))).await;
    register_gated(&stack, "gate", &gate).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let fan: Vec<Value> = (1..=5)
        .map(|i| json!({ "id": format!("leaf{i}"), "capability": "work", "depends_on": ["root"] }))
        .chain([json!({ "id": "root", "capability": "gate" })])
        .collect();
    let id = submit(&stack, &json!({ "name": "fan-out", "tasks": fan })).await;
    wait_for_status(&stack, &id, "root", "running").await;

    // Two cancels at once are one cancel.
    let (first, second) = tokio::join!(
        control(&stack, &id, "cancel"),
        control(&stack, &id, "cancel")
    );
    assert_eq!(
        (first.status, second.status),
        (200, 200),
        "{:?} {:?}",
        first.body,
        second.body
    );
    let changed = [&first, &second]
        .iter()
        .filter(|a| a.body["changed"] == true)
        .count();
    assert_eq!(changed, 1, "{:?} {:?}", first.body, second.body);
    let view = get(&stack, &format!("/v1/workflows/{id}")).await.body;
    assert_eq!(view["status"], "cancelling");
    for i in 1..=5 {
        let leaf = task(&view, &format!("leaf{i}"));
        assert_eq!(leaf["status"], "cancelled", "{leaf:#}");
        assert_eq!(leaf["error"]["kind"], "cancelled");
    }
    assert_eq!(task(&view, "root")["status"], "running");

    gate.open();
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "cancelled", "{workflow:#}");
    assert_eq!(
        task(&workflow, "root")["status"],
        "succeeded",
        "a running task finishes"
    );
    assert!(worker.calls().is_empty(), "no leaf ran");
    let late = control(&stack, &id, "cancel").await;
    assert_eq!(late.status, 409);
    assert_eq!(late.body["error"]["details"]["status"], "cancelled");

    // A redrive runs the cancelled leaves only; the root keeps its output.
    let retried = control(&stack, &id, "retry").await;
    assert_eq!(retried.status, 200, "{:?}", retried.body);
    assert_eq!(retried.body["tasks"]["restarted"], 5);
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    assert_eq!(workflow["redrives"], 1);
    assert_eq!(
        gate.called("root"),
        1,
        "the succeeded root is not called again"
    );
    assert_eq!(worker.calls().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forced_cancel_ends_the_workflow_at_once_and_a_late_result_changes_nothing() {
    let stack = start_stack("force", |_| {}).await;
    let gate = GatedAgent::start().await;
    register_gated(&stack, "gate", &gate).await;
    let id = submit(
        &stack,
        &json!({ "name": "forced", "tasks": [
            { "id": "a", "capability": "gate" },
            { "id": "b", "capability": "gate", "depends_on": ["a"] }
        ]}),
    )
    .await;
    wait_for_status(&stack, &id, "a", "running").await;
    let cancelled = post(&stack, &format!("/v1/workflows/{id}/cancel?force=true"), "").await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "cancelled");
    assert_eq!(task(&workflow, "a")["status"], "cancelled");

    gate.open();
    // The late answer is recorded on the task, marked late, and changes nothing else.
    let after = eventually("a's late result recorded", || async {
        let view = get(&stack, &format!("/v1/workflows/{id}")).await.body;
        (task(&view, "a")["attempts"][0]["late"] == true).then_some(view)
    })
    .await;
    assert_eq!(after["status"], "cancelled");
    let a = task(&after, "a");
    assert_eq!(a["status"], "cancelled");
    assert_eq!(a["attempts"][0]["outcome"], "succeeded");
    assert!(
        a["output"].is_null(),
        "the late output is not the task's: {a:#}"
    );
    assert_eq!(gate.called("a"), 1);
    assert_eq!(gate.called("b"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redrive_after_a_failure_reruns_only_the_failed_and_skipped_tasks_as_new_attempts() {
    let stack = start_stack("redrive", |_| {}).await;
    let worker = agent(Arc::new(|call: &Value| {
        AgentReply::ok(json!({ "from": call["task_id"] }))
    }))
    .await;
    // Fails its first call for good (a 400 is not retried), then works.
    let flaky = agent_scripted(
        vec![AgentReply::error(400, "bad day")],
        AgentReply::ok(json!({ "fixed": true })),
    )
    .await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    register_agent(&stack, "flaky", &flaky, &["flaky"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "redrive", "tasks": [
            { "id": "a", "capability": "work" },
            { "id": "b", "capability": "flaky", "depends_on": ["a"] },
            { "id": "c", "capability": "work", "depends_on": ["b"] }
        ]}),
    )
    .await;
    let failed = wait_until_finished(&stack, &id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(task(&failed, "c")["status"], "skipped");

    let answer = control(&stack, &id, "retry").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "running");
    assert_eq!(answer.body["tasks"]["restarted"], 2);
    let again = control(&stack, &id, "retry").await;
    assert!(
        again.status == 409 || again.body["status"] == "succeeded",
        "a redrive of a running workflow is refused: {:?}",
        again.body
    );
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    assert_eq!(workflow["redrives"], 1);
    let b = task(&workflow, "b");
    assert_eq!(b["attempt"], 2, "a new attempt: {b:#}");
    assert_eq!(b["output"]["fixed"], true);
    let keys: Vec<Option<String>> = flaky
        .calls()
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    assert_eq!(
        keys,
        [
            Some(format!("default:{id}:b:1")),
            Some(format!("default:{id}:b:2"))
        ]
    );
    let a_calls = worker
        .calls()
        .iter()
        .filter(|c| c.body["task_id"] == "a")
        .count();
    assert_eq!(a_calls, 1, "the succeeded task is not called again");
    assert_eq!(task(&workflow, "c")["status"], "succeeded");

    let history = get(&stack, &format!("/v1/workflows/{id}/history"))
        .await
        .body;
    let events = history["events"].as_array().expect("events");
    let redriven = events
        .iter()
        .position(|e| e["event"] == "redriven")
        .expect("redriven");
    let finished: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "finished")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(finished.len(), 1, "only the last end is shown: {history:#}");
    assert!(redriven < finished[0]);
    assert!(events
        .iter()
        .any(|e| e["event"] == "failed" && e["task"] == "b" && e["attempt"] == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_racing_a_completing_task_either_wins_or_is_refused_and_never_strands_the_workflow(
) {
    let stack = start_stack("race", |_| {}).await;
    let worker = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "ok": true })))).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let ids = futures::future::join_all((0..8).map(|i| {
        let stack = &stack;
        async move {
            submit(
                stack,
                &json!({ "name": format!("race-{i}"), "tasks": [
                    { "id": "only", "capability": "work" }
                ]}),
            )
            .await
        }
    }))
    .await;
    let answers =
        futures::future::join_all(ids.iter().map(|id| control(&stack, id, "cancel"))).await;
    for (id, answer) in ids.iter().zip(answers) {
        let workflow = wait_until_finished(&stack, id).await;
        match answer.status {
            200 => assert_eq!(workflow["status"], "cancelled", "{workflow:#}"),
            409 => assert_eq!(workflow["status"], "succeeded", "{workflow:#}"),
            other => panic!("cancel answered {other}: {:?}", answer.body),
        }
        let only = task(&workflow, "only");
        assert!(["succeeded", "cancelled"].contains(&only["status"].as_str().unwrap_or("")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controls_refuse_unknown_workflows_and_states_that_forbid_them() {
    let stack = api_only_stack("refusals").await;
    let unknown = control(&stack, "0192f0c4-aaaa-7bbb-8ccc-000000000000", "cancel").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["error"]["code"], "not_found");
    let bad_force = post(&stack, "/v1/workflows/x/pause?force=true", "").await;
    assert_eq!(bad_force.status, 400);
    let wrong_method = get(&stack, "/v1/workflows/x/cancel").await;
    assert_eq!(wrong_method.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflows_are_listed_newest_first_in_pages_and_filtered() {
    let stack = start_stack("list", |_| {}).await;
    let worker = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "ok": true })))).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let mut ids = Vec::new();
    for name in ["first", "second", "third"] {
        let id = submit(
            &stack,
            &json!({ "name": name, "tasks": [{ "id": "t", "capability": "work" }] }),
        )
        .await;
        wait_until_finished(&stack, &id).await;
        ids.push(id);
    }
    let page = get(&stack, "/v1/workflows?limit=2").await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let names: Vec<&str> = page.body["workflows"]
        .as_array()
        .expect("workflows")
        .iter()
        .map(|w| w["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["third", "second"]);
    let cursor = page.body["next_cursor"].as_str().expect("a next page");
    let rest = get(&stack, &format!("/v1/workflows?limit=2&cursor={cursor}")).await;
    assert_eq!(rest.body["workflows"][0]["workflow_id"], ids[0].as_str());
    assert_eq!(rest.body["workflows"].as_array().map(Vec::len), Some(1));
    assert!(rest.body["next_cursor"].is_null(), "{:?}", rest.body);

    let named = get(&stack, "/v1/workflows?name=second&status=succeeded").await;
    assert_eq!(named.body["workflows"].as_array().map(Vec::len), Some(1));
    assert_eq!(named.body["workflows"][0]["workflow_id"], ids[1].as_str());
    let none = get(&stack, "/v1/workflows?status=running").await;
    assert_eq!(none.body["workflows"].as_array().map(Vec::len), Some(0));
    let other_tenant = request(
        &stack,
        reqwest::Method::GET,
        "/v1/workflows",
        None,
        Some("someone-else"),
    )
    .await;
    assert_eq!(
        other_tenant.body["workflows"].as_array().map(Vec::len),
        Some(0)
    );

    for bad in [
        "status=done",
        "limit=0",
        "limit=101",
        "limit=ten",
        "cursor=zz",
        "cursor=00",
        "since=yesterday",
    ] {
        let answer = get(&stack, &format!("/v1/workflows?{bad}")).await;
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_graph_and_the_task_view_show_the_workflow() {
    let stack = start_stack("graph", |_| {}).await;
    let big = "x".repeat(20_000);
    let worker = agent(Arc::new(move |call: &Value| {
        AgentReply::ok(json!({ "task": call["task_id"], "text": big }))
    }))
    .await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let id = submit(&stack, &diamond("work")).await;
    let workflow = wait_until_finished(&stack, &id).await;
    let a = task(&workflow, "a");
    assert!(
        a["output"].is_null(),
        "a large output is left out of the view"
    );
    assert!(a["output_truncated"]["bytes"].as_u64().unwrap_or(0) > 20_000);
    let whole = get(&stack, &format!("/v1/workflows/{id}/tasks/a")).await;
    assert_eq!(whole.status, 200);
    assert_eq!(
        whole.body["output"]["text"].as_str().map(str::len),
        Some(20_000)
    );
    assert_eq!(
        get(&stack, &format!("/v1/workflows/{id}/tasks/nope"))
            .await
            .status,
        404
    );

    let client = baton_local::tenant_client("default").build().unwrap();
    let mermaid = client
        .get(format!("{}/v1/workflows/{id}/graph", stack.api_url))
        .send()
        .await
        .expect("graph");
    assert_eq!(mermaid.status(), 200);
    assert!(mermaid.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/plain"));
    let text = mermaid.text().await.expect("text");
    assert!(text.starts_with("flowchart LR"), "{text}");
    assert!(text.contains("succeeded · worker"), "{text}");
    assert!(text.contains("==>"), "the critical path is marked: {text}");
    let dot = client
        .get(format!(
            "{}/v1/workflows/{id}/graph?format=dot",
            stack.api_url
        ))
        .send()
        .await
        .expect("graph")
        .text()
        .await
        .expect("text");
    assert!(dot.starts_with("digraph"), "{dot}");
    let bad = get(&stack, &format!("/v1/workflows/{id}/graph?format=png")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["details"]["parameter"], "format");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controls_hold_under_lost_responses_duplicates_throttling_and_handler_deaths() {
    use baton_local::faults::{Fault, FaultPlan, FaultRule};
    let stack = start_stack("controls-chaos", |s| {
        s.faults = Some(FaultPlan::default());
        s.handler_death_rate = 0.05;
        recover_quickly(s);
    })
    .await;
    let gate = GatedAgent::start().await;
    let worker = agent(Arc::new(|call: &Value| {
        AgentReply::ok(json!({ "from": call["task_id"] }))
    }))
    .await;
    let flaky = agent_scripted(
        vec![AgentReply::error(400, "bad input, once")],
        AgentReply::ok(json!({ "fixed": true })),
    )
    .await;
    register_gated(&stack, "gate", &gate).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    register_agent(&stack, "flaky", &flaky, &["flaky"]).await;
    let proxy = stack.faults().expect("fault proxy");
    // The pause's, the resume's and the redrive's own writes each lose their response: the
    // SDK's retry meets the write and the request still answers as applied.
    for needle in ["paused", "resumed", "redriven"] {
        proxy
            .add_rule(FaultRule::once(
                "UpdateItem",
                &[needle],
                Fault::LoseResponse,
            ))
            .expect("rule");
    }
    proxy.set_plan(FaultPlan {
        seed: 11,
        duplicate_send_rate: 0.15,
        lost_write_response_rate: 0.03,
        throttle_rate: 0.02,
    });

    let leaves: Vec<Value> = (1..=4)
        .map(|i| json!({ "id": format!("leaf{i}"), "capability": "work", "depends_on": ["root"] }))
        .chain([
            json!({ "id": "root", "capability": "gate" }),
            json!({ "id": "last", "capability": "flaky", "depends_on": ["leaf1", "leaf2", "leaf3", "leaf4"] }),
        ])
        .collect();
    let id = submit(
        &stack,
        &json!({ "name": "chaos-controls", "tasks": leaves }),
    )
    .await;
    wait_for_status(&stack, &id, "root", "running").await;
    let paused = control_until_answered(&stack, &id, "pause").await;
    assert_eq!(paused.body["status"], "paused", "{:?}", paused.body);
    gate.open();
    eventually("the leaves released and held", || async {
        let view = get(&stack, &format!("/v1/workflows/{id}")).await.body;
        (1..=4)
            .all(|i| task(&view, &format!("leaf{i}"))["hold"] == "pause")
            .then_some(())
    })
    .await;
    assert!(worker.calls().is_empty(), "nothing ran while paused");
    let resumed = control_until_answered(&stack, &id, "resume").await;
    assert_eq!(resumed.body["status"], "running", "{:?}", resumed.body);
    let failed = wait_until_finished(&stack, &id).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert_eq!(failed["failed_task"], "last");

    let redriven = control_until_answered(&stack, &id, "retry").await;
    assert_eq!(
        redriven.body["tasks"]["restarted"], 1,
        "{:?}",
        redriven.body
    );
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    assert_eq!(workflow["redrives"], 1);
    assert_eq!(proxy.pending_rules(), 0, "every targeted fault happened");
    // Each task ran under one key per attempt: a handler's death may repeat a call, with the
    // same key, but no attempt ran under two.
    let mut keys: Vec<String> = worker
        .calls()
        .iter()
        .filter_map(|c| c.idempotency_key.clone())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 4, "{keys:?}");
    let mut last: Vec<String> = flaky
        .calls()
        .iter()
        .filter_map(|c| c.idempotency_key.clone())
        .collect();
    last.dedup();
    assert_eq!(
        last,
        [
            format!("default:{id}:last:1"),
            format!("default:{id}:last:2")
        ]
    );
    eprintln!(
        "faults: {:?}, handler deaths: {}",
        proxy.report(),
        stack.handler_deaths()
    );
}

/// Sends a control as a careful client does under faults: a 503 is sent again.
async fn control_until_answered(
    stack: &baton_local::stack::LocalStack,
    id: &str,
    action: &str,
) -> Answer {
    eventually(&format!("{action} answered"), || async {
        let answer = control(stack, id, action).await;
        (answer.status != 503).then_some(answer)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_diamond_and_a_paused_fan_out_behave_as_their_controls_say() {
    let stack = start_stack("shapes", |_| {}).await;
    let gate = GatedAgent::start().await;
    let worker = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "ok": true })))).await;
    register_gated(&stack, "gate", &gate).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;

    // A diamond cancelled while its root runs: b, c and d never start.
    let diamond = submit(&stack, &gated_diamond()).await;
    wait_for_status(&stack, &diamond, "a", "running").await;
    let cancelled = control(&stack, &diamond, "cancel").await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(
        cancelled.body["tasks"]["cancelled"], 3,
        "{:?}",
        cancelled.body
    );

    // A fan-out paused while its root runs (the same gate holds both roots).
    let leaves: Vec<Value> = (1..=4)
        .map(|i| json!({ "id": format!("leaf{i}"), "capability": "work", "depends_on": ["root"] }))
        .chain([json!({ "id": "root", "capability": "gate" })])
        .collect();
    let fan = submit(&stack, &json!({ "name": "fan-out", "tasks": leaves })).await;
    wait_for_status(&stack, &fan, "root", "running").await;
    let paused = control(&stack, &fan, "pause").await;
    assert_eq!(paused.body["status"], "paused", "{:?}", paused.body);
    let paused_again = control(&stack, &fan, "pause").await;
    assert_eq!(paused_again.body["changed"], false);

    gate.open();
    let diamond_view = wait_until_finished(&stack, &diamond).await;
    assert_eq!(diamond_view["status"], "cancelled", "{diamond_view:#}");
    assert_eq!(task(&diamond_view, "a")["status"], "succeeded");
    for t in ["b", "c", "d"] {
        assert_eq!(task(&diamond_view, t)["status"], "cancelled");
    }
    eventually("the fan-out's leaves held", || async {
        let view = get(&stack, &format!("/v1/workflows/{fan}")).await.body;
        (1..=4)
            .all(|i| task(&view, &format!("leaf{i}"))["hold"] == "pause")
            .then_some(())
    })
    .await;
    assert!(worker.calls().is_empty(), "nothing but the roots ran");
    let listed = get(&stack, "/v1/workflows?status=paused").await.body;
    assert_eq!(
        listed["workflows"][0]["workflow_id"],
        fan.as_str(),
        "{listed:#}"
    );

    assert_eq!(control(&stack, &fan, "resume").await.status, 200);
    let fan_view = wait_until_finished(&stack, &fan).await;
    assert_eq!(fan_view["status"], "succeeded", "{fan_view:#}");
    assert_eq!(
        worker.calls().len(),
        4,
        "each leaf ran once, after the resume"
    );
}

/// The attempt's dispatches (resends by the lease sweep) as stored.
async fn dispatches(stack: &baton_local::stack::LocalStack, id: &str, task_id: &str) -> u32 {
    use baton_chain::store::WorkflowStore;
    stack
        .execute_deps()
        .store
        .task(
            &"default".parse().unwrap(),
            &id.parse().unwrap(),
            &task_id.parse().unwrap(),
        )
        .await
        .expect("task read")
        .expect("task stored")
        .dispatches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resume_whose_release_lost_its_response_sends_the_held_tasks_at_once() {
    use baton_local::faults::{Fault, FaultPlan, FaultRule};
    // Sweeps run, with a short dispatch lease: a held task the resume did not send would be
    // sent again by the lease sweep, and its `dispatches` would show it.
    let stack = start_stack("release-lost", |s| {
        s.faults = Some(FaultPlan::default());
        recover_quickly(s);
    })
    .await;
    let gate = GatedAgent::start().await;
    let worker = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "ok": true })))).await;
    register_gated(&stack, "gate", &gate).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let proxy = stack.faults().expect("fault proxy");

    let id = submit(&stack, &gated_diamond()).await;
    wait_for_status(&stack, &id, "a", "running").await;
    let paused = control(&stack, &id, "pause").await;
    assert_eq!(paused.body["status"], "paused", "{:?}", paused.body);
    gate.open();
    eventually("a's dependents queued and held", || async {
        let view = get(&stack, &format!("/v1/workflows/{id}")).await.body;
        let held =
            |t: &str| task(&view, t)["status"] == "queued" && task(&view, t)["hold"] == "pause";
        (held("b") && held("c")).then_some(())
    })
    .await;

    // The release of each queued task is applied and its response lost: the SDK's retry
    // meets the write it already made.
    for t in ["b", "c"] {
        proxy
            .add_rule(FaultRule::once(
                "UpdateItem",
                &["dispatches = :zero REMOVE held_for", &format!("TASK#{t}\"")],
                Fault::LoseResponse,
            ))
            .expect("rule");
    }
    let resumed = control(&stack, &id, "resume").await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    assert_eq!(resumed.body["tasks"]["released"], 3, "{:?}", resumed.body);
    assert_eq!(
        proxy.pending_rules(),
        0,
        "both releases lost their responses"
    );
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    assert_eq!(worker.calls().len(), 3, "b, c and d ran once each");
    // Sent by the resume itself: the lease sweep never had to send them again.
    for t in ["b", "c"] {
        assert_eq!(
            dispatches(&stack, &id, t).await,
            0,
            "{t} was resent by the sweep"
        );
    }
}
