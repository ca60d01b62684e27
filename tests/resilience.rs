//! Resilient execution on the local stack with real HTTP agents: retries and their history,
//! fallbacks, circuit breakers, health checks, time-outs and deadlines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton_chain::queue::TaskQueue;
use baton_chain::store::LearningStore;
use baton_local::agents::{AgentReply, AgentServer};
use baton_local::stack::LocalStack;
use baton_tests::*;
use baton_types::agent::AgentRegistration;
use baton_types::clock::now_ms;
use baton_types::messages::{OutcomeMessage, RouteMessage, TaskRef, FORMAT_VERSION};
use serde_json::{json, Value};

/// A quick policy, so tests do not wait for the built-in backoff.
fn quick_retry(max_attempts: u32) -> Value {
    json!({ "max_attempts": max_attempts, "backoff": "fixed", "base_ms": 50, "jitter": "none" })
}

fn one_task(capability: &str, extra: Value) -> Value {
    let mut task = json!({ "id": "t", "capability": capability });
    task.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    json!({ "name": "one", "tasks": [task] })
}

fn attempts(workflow: &Value, task_id: &str) -> Vec<Value> {
    task(workflow, task_id)["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn keys(server: &AgentServer) -> Vec<String> {
    server
        .calls()
        .iter()
        .filter_map(|c| c.idempotency_key.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_that_fails_twice_then_succeeds_ends_succeeded_with_three_attempts() {
    let stack = start_stack("retried", |_| {}).await;
    let server = agent_scripted(
        vec![
            AgentReply::error(503, "warming up"),
            AgentReply::error(500, "model crashed"),
        ],
        AgentReply::ok(json!({ "answer": 42 })),
    )
    .await;
    register_agent(&stack, "flaky", &server, &["work"]).await;
    let id = submit(
        &stack,
        &one_task(
            "work",
            json!({ "retry": { "backoff": "fixed", "base_ms": 100, "jitter": "none" } }),
        ),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;

    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    let t = task(&workflow, "t");
    assert_eq!(t["output"]["answer"], 42);
    let tries = attempts(&workflow, "t");
    assert_eq!(tries.len(), 3, "{t:#}");
    let outcomes: Vec<&str> = tries
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"]);
    assert_eq!(tries[0]["error"]["http_status"], 503);
    assert_eq!(tries[1]["error"]["http_status"], 500);
    assert_eq!(tries[0]["retry_delay_ms"], 100);
    assert_eq!(tries[1]["retry_delay_ms"], 100);
    assert!(tries[2]["retry_delay_ms"].is_null());
    for (n, a) in tries.iter().enumerate() {
        assert_eq!(a["attempt"], n + 1);
        assert_eq!(a["agent"], "flaky");
        assert!(a["started_at"].is_string() && a["finished_at"].is_string());
    }
    assert_eq!(
        t["lease_expirations"], 0,
        "no handler died: retries are not lease re-claims"
    );
    // Each retry after a recorded failure is a new attempt with a new key.
    let expected: Vec<String> = (1..=3).map(|n| format!("default:{id}:t:{n}")).collect();
    assert_eq!(keys(&server), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_error_is_not_retried() {
    let stack = start_stack("no-retry", |_| {}).await;
    let server = agent_replying(AgentReply::error(422, "cannot read this input")).await;
    register_agent(&stack, "picky", &server, &["work"]).await;
    let id = submit(
        &stack,
        &one_task("work", json!({ "retry": quick_retry(5) })),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    assert_eq!(workflow["failed_task"], "t");
    let t = task(&workflow, "t");
    assert_eq!(t["error"]["http_status"], 422);
    assert_eq!(t["error"]["retryable"], false);
    assert_eq!(attempts(&workflow, "t").len(), 1);
    assert_eq!(server.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_longer_than_the_backoff_is_waited_for() {
    let stack = start_stack("retry-after", |_| {}).await;
    let server = agent_scripted(
        vec![AgentReply::error(429, "slow down").with_header("retry-after", "2")],
        AgentReply::ok(json!({ "ok": true })),
    )
    .await;
    register_agent(&stack, "limited", &server, &["work"]).await;
    let id = submit(
        &stack,
        &one_task("work", json!({ "retry": quick_retry(3) })),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    let tries = attempts(&workflow, "t");
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[0]["error"]["retry_after_ms"], 2000);
    assert_eq!(
        tries[0]["retry_delay_ms"], 2000,
        "Retry-After beats the 50 ms backoff"
    );
    let gap = millis(&tries[1]["started_at"]) - millis(&tries[0]["finished_at"]);
    assert!(
        gap >= 2_000,
        "the second attempt started {gap} ms after the first"
    );
}

fn millis(rfc3339: &Value) -> i64 {
    let at = humantime::parse_rfc3339(rfc3339.as_str().expect("a timestamp")).unwrap();
    at.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Makes `agent` look like the best agent for `work`, so routing picks it first.
/// Makes `agent` the one learned routing picks first: a good history for it, and a poor one
/// (not counted by the circuit) for `rival`, so that a draw never favours the rival.
async fn seed_good_history(stack: &LocalStack, agent: &str, rival: &str) {
    seed_history(stack, agent, true).await;
    seed_history(stack, rival, false).await;
}

async fn seed_history(stack: &LocalStack, agent: &str, success: bool) {
    let outcomes: Vec<OutcomeMessage> = (0..8)
        .map(|i| OutcomeMessage {
            v: FORMAT_VERSION,
            task: TaskRef {
                tenant: "default".parse().unwrap(),
                workflow_id: "history".parse().unwrap(),
                task_id: format!("h{i}").parse().unwrap(),
                attempt: 1,
            },
            agent: agent.parse().unwrap(),
            task_type: "work".into(),
            success,
            latency_ms: 10,
            failure: None,
            usage: None,
            finished_at_ms: now_ms(),
            counts_for_circuit: success,
            breaker: None,
            details: Default::default(),
        })
        .collect();
    stack
        .learn_deps()
        .store
        .record_outcomes(&outcomes, 600_000, now_ms() / 1000 + 3600)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_whose_primary_agent_is_down_succeeds_on_its_fallback() {
    let stack = start_stack("fallback", |_| {}).await;
    let down = ClosedPort::new();
    let up = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "by": "up" })))).await;
    register_url(&stack, "down", &down.url, &["work"]).await;
    register_agent(&stack, "up", &up, &["work"]).await;
    seed_good_history(&stack, "down", "up").await;

    let id = submit(
        &stack,
        &one_task("work", json!({ "retry": quick_retry(3) })),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    let tries = attempts(&workflow, "t");
    assert_eq!(tries.len(), 2, "{tries:#?}");
    assert_eq!(tries[0]["agent"], "down");
    assert_eq!(tries[0]["error"]["kind"], "connection");
    assert_eq!(
        tries[1]["agent"], "up",
        "the retry went to the decision's fallback"
    );
    assert_eq!(task(&workflow, "t")["output"]["by"], "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_turns_fallback_off_is_retried_on_the_same_agent() {
    let stack = start_stack("no-fallback", |_| {}).await;
    let down = ClosedPort::new();
    let up = agent_replying(AgentReply::ok(json!({}))).await;
    register_url(&stack, "down", &down.url, &["work"]).await;
    register_agent(&stack, "up", &up, &["work"]).await;
    seed_good_history(&stack, "down", "up").await;

    let id = submit(
        &stack,
        &one_task(
            "work",
            json!({ "retry": quick_retry(3), "fallback": false }),
        ),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    let tries = attempts(&workflow, "t");
    assert_eq!(tries.len(), 3);
    assert!(tries.iter().all(|a| a["agent"] == "down"), "{tries:#?}");
    assert!(up.calls().is_empty());
}

fn registration(name: &str, server: &AgentServer, enabled: bool) -> AgentRegistration {
    AgentRegistration {
        timeout_ms: Some(5_000),
        enabled,
        ..AgentRegistration::http(name, &server.url, &["work"])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_whose_agent_was_disabled_since_routing_is_routed_again_not_failed() {
    let stack = start_stack("disabled", |s| s.run_execute = false).await;
    let first = agent_replying(AgentReply::ok(json!({ "by": "first" }))).await;
    let second = agent_replying(AgentReply::ok(json!({ "by": "second" }))).await;
    register_agent(&stack, "first", &first, &["work"]).await;
    register_agent(&stack, "second", &second, &["work"]).await;
    let id = submit(&stack, &one_task("work", json!({}))).await;

    let routed = receive_one(&stack, "ExecuteQueue").await;
    let decision: baton_types::messages::ExecuteMessage =
        serde_json::from_str(routed.body().unwrap()).unwrap();
    let (chosen, other) = if decision.route.primary == "first" {
        ("first", "second")
    } else {
        ("second", "first")
    };
    let chosen_server = if chosen == "first" { &first } else { &second };
    stack
        .put_agent("default", registration(chosen, chosen_server, false))
        .await
        .unwrap();

    deliver_execute(&stack, &routed).await;
    let rerouted = receive_one(&stack, "ExecuteQueue").await;
    let again: baton_types::messages::ExecuteMessage =
        serde_json::from_str(rerouted.body().unwrap()).unwrap();
    assert_eq!(again.task.attempt, 1, "no attempt was spent");
    assert_eq!(again.route.primary, other);
    deliver_execute(&stack, &rerouted).await;

    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    let tries = attempts(&workflow, "t");
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0]["agent"], other);
    assert!(chosen_server.calls().is_empty());
}

async fn deliver_execute(stack: &LocalStack, message: &aws_sdk_sqs::types::Message) {
    let response = baton_execute_agent::handle_batch(stack.execute_deps(), sqs_event(&[message]))
        .await
        .expect("handler returns");
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
}

/// An agent that fails with 500 while `failing` is set.
async fn switchable_agent(failing: Arc<AtomicBool>) -> AgentServer {
    agent(Arc::new(move |_: &Value| {
        if failing.load(Ordering::SeqCst) {
            AgentReply::error(500, "down for maintenance")
        } else {
            AgentReply::ok(json!({ "ok": true }))
        }
    }))
    .await
}

async fn circuit_state(stack: &LocalStack, agent: &str) -> Value {
    agent_view(stack, agent).await["circuit"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_that_keeps_failing_has_its_circuit_opened_and_closed_again() {
    let stack = start_stack("circuit", |_| {}).await;
    let failing = Arc::new(AtomicBool::new(true));
    let server = switchable_agent(failing.clone()).await;
    register(
        &stack,
        json!({ "name": "brittle", "endpoint": server.url, "capabilities": ["work"],
                "timeout_ms": 5000, "circuit_breaker": { "failure_threshold": 3, "cooldown_s": 2 } }),
    )
    .await;
    assert_eq!(circuit_state(&stack, "brittle").await["state"], "closed");

    for _ in 0..3 {
        let id = submit_single_try(&stack).await;
        assert_eq!(wait_until_finished(&stack, &id).await["status"], "failed");
    }
    let open = eventually("the circuit opens", || async {
        let c = circuit_state(&stack, "brittle").await;
        (c["state"] == "open").then_some(c)
    })
    .await;
    assert!(open["opened_at"].is_string(), "{open}");
    assert_eq!(open["consecutive_failures"], 3);
    assert!(open["failure_rate"].as_f64().unwrap() > 0.0);
    let listed = get(&stack, "/v1/agents").await.body;
    assert_eq!(listed["agents"][0]["circuit"]["state"], "open");

    // While open, a task with no attempt to spare fails at once, without calling the agent.
    let calls_before = server.calls().len();
    let id = submit_single_try(&stack).await;
    let refused = wait_until_finished(&stack, &id).await;
    assert_eq!(task(&refused, "t")["error"]["kind"], "circuit_open");
    assert_eq!(server.calls().len(), calls_before);

    // The agent recovers; after the cool-down one probe goes through and closes the circuit.
    failing.store(false, Ordering::SeqCst);
    eventually("the circuit is half-open", || async {
        (circuit_state(&stack, "brittle").await["state"] == "half_open").then_some(())
    })
    .await;
    let id = submit_single_try(&stack).await;
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );
    let closed = eventually("the probe's success closes the circuit", || async {
        let c = circuit_state(&stack, "brittle").await;
        (c["state"] == "closed").then_some(c)
    })
    .await;
    assert!(closed["opened_at"].is_null());
    assert_eq!(closed["consecutive_failures"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_every_capable_agent_is_open_the_task_waits_as_a_retry() {
    let stack = start_stack("all-open", |_| {}).await;
    let server = agent_replying(AgentReply::error(503, "overloaded")).await;
    register(
        &stack,
        json!({ "name": "only", "endpoint": server.url, "capabilities": ["work"],
                "circuit_breaker": { "failure_threshold": 1, "cooldown_s": 600 } }),
    )
    .await;
    let id = submit_single_try(&stack).await;
    wait_until_finished(&stack, &id).await;
    eventually("the circuit opens", || async {
        (circuit_state(&stack, "only").await["state"] == "open").then_some(())
    })
    .await;

    let id = submit(
        &stack,
        &one_task("work", json!({ "retry": quick_retry(3) })),
    )
    .await;
    let waiting = eventually("the first attempt is spent waiting", || async {
        let w = workflow_view(&stack, &id).await;
        (attempts(&w, "t").len() == 1).then_some(w)
    })
    .await;
    let t = task(&waiting, "t");
    assert_eq!(t["status"], "queued", "it waits for the cool-down: {t:#}");
    assert_eq!(t["attempt"], 2);
    let first = &attempts(&waiting, "t")[0];
    assert_eq!(first["error"]["kind"], "circuit_open");
    assert!(first["agent"].is_null());
    let delay = first["retry_delay_ms"].as_u64().unwrap();
    assert!(
        delay > 500_000,
        "the wait lasts until the cool-down ends: {delay} ms"
    );
    assert_eq!(waiting["status"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unhealthy_agent_is_not_routed_to_until_it_recovers() {
    let stack = start_stack("health", |s| {
        s.sweep_every = Some(Duration::from_millis(250))
    })
    .await;
    let sick = agent(Arc::new(|_: &Value| {
        AgentReply::ok(json!({ "by": "sick" }))
    }))
    .await;
    let well = agent(Arc::new(|_: &Value| {
        AgentReply::ok(json!({ "by": "well" }))
    }))
    .await;
    for (name, server) in [("sick", &sick), ("well", &well)] {
        register(
            &stack,
            json!({ "name": name, "endpoint": server.url, "capabilities": ["work"],
                    "health_check": { "path": "/health", "interval_s": 1 } }),
        )
        .await;
    }
    // Unhealthy before any task is routed (routing caches the registry for a few seconds).
    sick.set_healthy(false);
    let health = eventually("the failing agent is found unhealthy", || async {
        let h = agent_view(&stack, "sick").await["health"].clone();
        (h["status"] == "unhealthy").then_some(h)
    })
    .await;
    assert!(health["checked_at"].is_string());
    for _ in 0..6 {
        let id = submit(&stack, &one_task("work", json!({}))).await;
        let workflow = wait_until_finished(&stack, &id).await;
        assert_eq!(task(&workflow, "t")["agent"], "well");
    }
    assert!(sick.calls().is_empty());

    // It recovers, and the other one fails its checks: routing follows the health.
    sick.set_healthy(true);
    well.set_healthy(false);
    eventually("the agents' health has turned round", || async {
        let sick = agent_view(&stack, "sick").await;
        let well = agent_view(&stack, "well").await;
        (sick["health"]["status"] == "healthy" && well["health"]["status"] == "unhealthy")
            .then_some(())
    })
    .await;
    // Routing sees the change once its few-second cache of the registry refreshes.
    eventually("the recovered agent is routed to again", || async {
        let id = submit(&stack, &one_task("work", json!({}))).await;
        let workflow = wait_until_finished(&stack, &id).await;
        (task(&workflow, "t")["agent"] == "sick").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_time_out_shorter_than_the_agents_applies() {
    let stack = start_stack("task-timeout", |_| {}).await;
    let slow = agent_replying(AgentReply::ok(json!({})).after(Duration::from_secs(3))).await;
    register_agent(&stack, "slow", &slow, &["work"]).await; // its own time-out: 5 s
    let id = submit(
        &stack,
        &one_task("work", json!({ "timeout_s": 1, "retry": quick_retry(1) })),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    let error = &task(&workflow, "t")["error"];
    assert_eq!(error["kind"], "timeout");
    assert!(
        error["message"].as_str().unwrap().contains("1000 ms"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_past_its_deadline_has_its_tasks_cancelled_and_fails() {
    let stack = start_stack("deadline", |s| {
        s.sweep_every = Some(Duration::from_millis(200))
    })
    .await;
    let slow = agent_replying(AgentReply::ok(json!({})).after(Duration::from_secs(4))).await;
    register_agent(&stack, "slow", &slow, &["work"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "late", "timeout_s": 1, "tasks": [
            { "id": "a", "capability": "work" },
            { "id": "b", "capability": "work", "depends_on": ["a"] }
        ]}),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed", "{workflow:#}");
    assert_eq!(workflow["error"]["kind"], "deadline_exceeded");
    assert!(workflow["deadline_at"].is_string());
    for t in ["a", "b"] {
        assert_eq!(task(&workflow, t)["status"], "cancelled");
        assert_eq!(task(&workflow, t)["error"]["kind"], "deadline_exceeded");
    }
    // a's late answer is recorded nowhere: once its handler is done, nothing has changed.
    assert_eq!(slow.calls().len(), 1);
    eventually("a's handler finishes", || async {
        (queue_depth(&stack, "ExecuteQueue").await == 0).then_some(())
    })
    .await;
    let after = workflow_view(&stack, &id).await;
    assert_eq!(after["status"], "failed");
    assert_eq!(task(&after, "a")["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backoff_longer_than_sqs_allows_is_chained_through_route() {
    let stack = start_stack("chained", |s| {
        s.run_route = false;
        s.run_execute = false;
    })
    .await;
    let server = agent_replying(AgentReply::ok(json!({}))).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let id = submit(&stack, &one_task("work", json!({}))).await;
    let first = receive_one(&stack, "RouteQueue").await;
    let mut message: RouteMessage = serde_json::from_str(first.body().unwrap()).unwrap();
    assert_eq!(message.task.workflow_id, id);

    // A retry due in 40 minutes: SQS can delay it 15 at most, so route sends it round again.
    message.not_before_ms = Some(now_ms() + 40 * 60_000);
    stack
        .route_deps()
        .queue
        .send_route_after(&message, Duration::ZERO)
        .await
        .unwrap();
    let due_later = receive_one(&stack, "RouteQueue").await;
    let response = baton_route::handle_batch(stack.route_deps(), sqs_event(&[&due_later]))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        queue_depth(&stack, "ExecuteQueue").await,
        0,
        "not routed before it is due"
    );
    assert_eq!(
        delayed_messages(&stack, "RouteQueue").await,
        1,
        "sent round with a delay"
    );
}

/// Submits one `work` task that gets a single attempt; returns the workflow id.
async fn submit_single_try(stack: &LocalStack) -> String {
    submit(stack, &one_task("work", json!({ "retry": quick_retry(1) }))).await
}

async fn delayed_messages(stack: &LocalStack, queue: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = stack
        .clients
        .sqs
        .get_queue_attributes()
        .queue_url(stack.queue_url(queue).unwrap())
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap();
    out.attributes
        .unwrap_or_default()
        .get(&A::ApproximateNumberOfMessagesDelayed)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_copy_of_a_finished_tasks_message_does_not_take_the_probe() {
    let stack = start_stack("stale-probe", |_| {}).await;
    let failing = Arc::new(AtomicBool::new(true));
    let server = switchable_agent(failing.clone()).await;
    register(
        &stack,
        json!({ "name": "brittle", "endpoint": server.url, "capabilities": ["work"],
                "circuit_breaker": { "failure_threshold": 1, "cooldown_s": 1 } }),
    )
    .await;
    let id = submit_single_try(&stack).await;
    assert_eq!(wait_until_finished(&stack, &id).await["status"], "failed");
    eventually("the circuit is half-open", || async {
        (circuit_state(&stack, "brittle").await["state"] == "half_open").then_some(())
    })
    .await;

    // A duplicate of the finished task's route message arrives late, as SQS may deliver it.
    let stale = RouteMessage::new(
        TaskRef {
            tenant: "default".parse().unwrap(),
            workflow_id: id.parse().unwrap(),
            task_id: "t".parse().unwrap(),
            attempt: 1,
        },
        "work",
        Default::default(),
    );
    let message = aws_sdk_sqs::types::Message::builder()
        .message_id("late-copy")
        .receipt_handle("late-copy")
        .body(serde_json::to_string(&stale).unwrap())
        .build();
    let response = baton_route::handle_batch(stack.route_deps(), sqs_event(&[&message]))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        circuit_state(&stack, "brittle").await["probe_out"],
        false,
        "the probe is left for a call that will happen"
    );

    // A real task takes it, and its success closes the circuit.
    failing.store(false, Ordering::SeqCst);
    let id = submit_single_try(&stack).await;
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );
    eventually("the circuit closes", || async {
        (circuit_state(&stack, "brittle").await["state"] == "closed").then_some(())
    })
    .await;
}
