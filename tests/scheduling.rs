//! Routing strategies, concurrency and resource limits, priorities and deadlines, end to end on
//! the local stack with real HTTP agents, and the slot store against the emulator.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_chain::store::{RoutingState, SlotGrant, SlotHold};
use baton_local::agents::AgentReply;
use baton_tests::*;
use baton_types::clock::now_ms;
use baton_types::ids::{AgentName, TenantId};
use baton_types::resources::{Limits, Resources};
use serde_json::{json, Value};

fn single(capability: &str, extra: Value) -> Value {
    let mut task = json!({ "id": "t", "capability": capability, "retry": { "max_attempts": 1 } });
    task.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    json!({ "name": "one", "tasks": [task] })
}

/// The agent each task's first attempt ran on.
fn agents_of(workflow: &Value) -> Vec<String> {
    workflow["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["attempts"][0]["agent"]
                .as_str()
                .unwrap_or("-")
                .to_string()
        })
        .collect()
}

async fn put(stack: &baton_local::stack::LocalStack, path: &str, body: Value) -> Answer {
    request(
        stack,
        reqwest::Method::PUT,
        path,
        Some(&body.to_string()),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_alternates_through_the_shared_counter_chosen_per_task_or_per_capability() {
    let stack = start_stack("round-robin", |_| {}).await;
    let server = agent_replying(AgentReply::ok(json!({}))).await;
    for name in ["a", "b", "c"] {
        register_agent(&stack, name, &server, &["work", "spread"]).await;
    }
    let mut chosen = Vec::new();
    for _ in 0..6 {
        let id = submit(&stack, &single("work", json!({ "routing": "round_robin" }))).await;
        let workflow = wait_until_finished(&stack, &id).await;
        assert_eq!(workflow["status"], "succeeded");
        assert!(workflow["tasks"][0]["routing"] == "round_robin");
        chosen.extend(agents_of(&workflow));
    }
    assert_eq!(chosen, ["a", "b", "c", "a", "b", "c"]);

    // The capability's default, set through the API, applies to tasks that name none.
    let answer = put(
        &stack,
        "/v1/capabilities/spread",
        json!({ "routing": "round_robin" }),
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["routing"], "round_robin");
    // Routers cache a tenant's settings for a few seconds: the first task shows when the
    // default applies.
    eventually("routing uses the capability's default", || async {
        let id = submit(&stack, &single("spread", json!({}))).await;
        let workflow = wait_until_finished(&stack, &id).await;
        (workflow["tasks"][0]["decision"]["strategy"] == "round_robin").then_some(())
    })
    .await;
    let shown = get(&stack, "/v1/capabilities/spread").await.body;
    assert_eq!(
        (shown["routing"].as_str(), shown["configured"].as_bool()),
        (Some("round_robin"), Some(true))
    );
    let mut chosen = Vec::new();
    for _ in 0..3 {
        let id = submit(&stack, &single("spread", json!({}))).await;
        let workflow = wait_until_finished(&stack, &id).await;
        let reasoning = workflow["tasks"][0]["decision"]["reasoning"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(reasoning.contains("round robin"), "{reasoning}");
        chosen.extend(agents_of(&workflow));
    }
    chosen.sort();
    assert_eq!(chosen, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_routing_follows_the_weights() {
    let stack = start_stack("weighted", |_| {}).await;
    let server = agent_replying(AgentReply::ok(json!({}))).await;
    for (name, weight) in [("heavy", 3.0), ("light", 1.0)] {
        register(
            &stack,
            json!({ "name": name, "endpoint": server.url, "capabilities": ["work"], "weight": weight }),
        )
        .await;
    }
    let tasks: Vec<Value> = (0..80)
        .map(|i| json!({ "id": format!("t{i}"), "capability": "work", "routing": "weighted" }))
        .collect();
    let id = submit(&stack, &json!({ "name": "many", "tasks": tasks })).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded");
    let heavy = agents_of(&workflow)
        .iter()
        .filter(|a| *a == "heavy")
        .count();
    // 3 to 1 over 80 draws: 60 expected (sd 3.9); the bounds are four or more sd away, so
    // the light agent is neither starved nor favoured but by a one-in-many-thousands draw.
    assert!(
        (44..=76).contains(&heavy),
        "{heavy} of 80 to the heavy agent"
    );
}

/// The most attempts on `agent` whose runs overlapped at any moment.
fn max_overlap(workflow: &Value, agent: &str) -> usize {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for task in workflow["tasks"].as_array().unwrap() {
        for attempt in task["attempts"].as_array().unwrap() {
            if attempt["agent"] != agent {
                continue;
            }
            let at = |field: &str| {
                humantime::parse_rfc3339(attempt[field].as_str().unwrap())
                    .unwrap()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64
            };
            events.push((at("started_at"), 1));
            events.push((at("finished_at"), -1));
        }
    }
    // At equal times an end comes before a start: the slot was given back first.
    events.sort();
    let (mut now, mut most) = (0_i32, 0_i32);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_never_has_more_calls_in_flight_than_its_max_concurrency() {
    let stack = start_stack("max-concurrency", |_| {}).await;
    let server = agent_replying(AgentReply::ok(json!({})).after(Duration::from_millis(300))).await;
    register(
        &stack,
        json!({ "name": "narrow", "endpoint": server.url, "capabilities": ["work"],
                "max_concurrency": 2 }),
    )
    .await;
    let tasks: Vec<Value> = (0..8)
        .map(|i| json!({ "id": format!("t{i}"), "capability": "work" }))
        .collect();
    let id = submit(&stack, &json!({ "name": "burst", "tasks": tasks })).await;
    eventually("calls in flight show on the agent", || async {
        let view = agent_view(&stack, "narrow").await;
        (view["in_flight"].as_u64() > Some(0)).then_some(())
    })
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    assert!(max_overlap(&workflow, "narrow") <= 2, "{workflow:#}");
    // Waiting for a slot spends no attempt.
    for task in workflow["tasks"].as_array().unwrap() {
        assert_eq!(task["attempts"].as_array().unwrap().len(), 1, "{task:#}");
    }
    let view = eventually("the slots are given back", || async {
        let view = agent_view(&stack, "narrow").await;
        (view["in_flight"] == 0).then_some(view)
    })
    .await;
    assert_eq!(view["max_concurrency"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_agents_that_can_hold_a_tasks_resources_take_it() {
    let stack = start_stack("resources", |_| {}).await;
    let server = agent_replying(AgentReply::ok(json!({})).after(Duration::from_millis(200))).await;
    register(
        &stack,
        json!({ "name": "gpu-box", "endpoint": server.url, "capabilities": ["render"],
                "resources": { "gpu": 2, "memory_mb": 16384 } }),
    )
    .await;
    register(
        &stack,
        json!({ "name": "cpu-box", "endpoint": server.url, "capabilities": ["render"] }),
    )
    .await;
    let tasks: Vec<Value> = (0..6)
        .map(
            |i| json!({ "id": format!("t{i}"), "capability": "render", "resources": { "gpu": 1 } }),
        )
        .collect();
    let id = submit(&stack, &json!({ "name": "gpu work", "tasks": tasks })).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    assert!(agents_of(&workflow).iter().all(|a| a == "gpu-box"));
    assert!(max_overlap(&workflow, "gpu-box") <= 2, "two GPUs, one each");
    assert_eq!(workflow["tasks"][0]["resources"]["gpu"], 1);

    // Needs no agent can ever hold fail the task at once, saying why.
    let id = submit(
        &stack,
        &single("render", json!({ "resources": { "gpu": 3 } })),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed");
    let error = &workflow["tasks"][0]["error"];
    assert_eq!(error["kind"], "no_capable_agent", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("resources"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_cannot_start_before_its_deadline_fails_deadline_exceeded() {
    let stack = start_stack("task-deadline", |_| {}).await;
    let server =
        agent_replying(AgentReply::ok(json!({})).after(Duration::from_millis(2_500))).await;
    register(
        &stack,
        json!({ "name": "single", "endpoint": server.url, "capabilities": ["work"],
                "max_concurrency": 1 }),
    )
    .await;
    let blocker = submit(&stack, &single("work", json!({}))).await;
    eventually("the first call holds the only slot", || async {
        (agent_view(&stack, "single").await["in_flight"] == 1).then_some(())
    })
    .await;
    let late = submit(&stack, &single("work", json!({ "deadline_s": 1 }))).await;
    let workflow = wait_until_finished(&stack, &late).await;
    assert_eq!(workflow["status"], "failed", "{workflow:#}");
    assert_eq!(workflow["tasks"][0]["error"]["kind"], "deadline_exceeded");
    assert!(workflow["tasks"][0]["deadline"].is_string());
    assert_eq!(
        wait_until_finished(&stack, &blocker).await["status"],
        "succeeded"
    );
    assert_eq!(
        server.calls().len(),
        1,
        "the late task never reached the agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn priorities_give_tasks_a_score_band_and_tenants_set_multipliers() {
    let stack = start_stack("priorities", |_| {}).await;
    let server = agent_replying(AgentReply::ok(json!({}))).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let tasks = json!([
        { "id": "finance", "capability": "work", "type": "finance", "priority": "critical" },
        { "id": "fraud", "capability": "work", "type": "fraud_detection", "priority": "high" },
        { "id": "video", "capability": "work", "type": "video_generation", "priority": "high" },
        { "id": "email", "capability": "work", "type": "email_campaign", "priority": "normal" },
        { "id": "plain", "capability": "work" }
    ]);
    let id = submit(&stack, &json!({ "name": "mixed", "tasks": tasks })).await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    let bands: BTreeMap<String, String> = workflow["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().into(),
                t["band"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(bands["finance"], "urgent");
    assert_eq!(bands["fraud"], "urgent");
    assert_eq!(bands["video"], "standard");
    assert_eq!(bands["email"], "standard");
    assert_eq!(bands["plain"], "standard");

    let defaults = get(&stack, "/v1/priorities").await.body;
    assert_eq!(defaults["multipliers"]["finance"], 1.5);
    assert_eq!(defaults["levels"]["critical"], 4.0);
    let set = put(
        &stack,
        "/v1/priorities",
        json!({ "multipliers": { "email_campaign": 2.0 } }),
    )
    .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    assert_eq!(set.body["multipliers"]["email_campaign"], 2.0);
    assert_eq!(set.body["multipliers"]["finance"], 1.5);
    let id = submit(
        &stack,
        &single(
            "work",
            json!({ "type": "email_campaign", "priority": "normal" }),
        ),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["tasks"][0]["band"], "urgent", "2 × 2.0 = 4.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_scheduling_input_is_refused_naming_the_field_and_stores_nothing() {
    let stack = api_only_stack("scheduling-errors").await;
    let agent = |extra: Value| {
        let mut body =
            json!({ "name": "a", "endpoint": "http://127.0.0.1:9/", "capabilities": ["work"] });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap());
        body
    };
    for (extra, field) in [
        (json!({ "weight": 0 }), "weight"),
        (json!({ "weight": -1.5 }), "weight"),
        (json!({ "max_concurrency": 0 }), "max_concurrency"),
        (json!({ "resources": { "gpus": 1 } }), "resources.gpus"),
        (json!({ "resources": { "gpu": 0 } }), "resources.gpu"),
    ] {
        let answer = post(&stack, "/v1/agents", &agent(extra.clone()).to_string()).await;
        assert_eq!(answer.status, 400, "{extra}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["details"]["field"], field, "{extra}");
    }
    for (extra, field) in [
        (json!({ "routing": "fastest" }), "routing"),
        (json!({ "priority": "urgent" }), "priority"),
        (json!({ "resources": { "tpu": 1 } }), "resources.tpu"),
        (json!({ "deadline": "2020-01-01T00:00:00Z" }), "deadline"),
        (json!({ "deadline": "next tuesday" }), "deadline"),
        (json!({ "deadline_s": -5 }), "deadline_s"),
    ] {
        let answer = post(
            &stack,
            "/v1/workflows",
            &single("work", extra.clone()).to_string(),
        )
        .await;
        assert_eq!(answer.status, 400, "{extra}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["details"]["field"], field, "{extra}");
        assert_eq!(answer.body["error"]["details"]["task_index"], 0);
    }
    for (path, body, field) in [
        (
            "/v1/capabilities/work",
            json!({ "routing": "fastest" }),
            "routing",
        ),
        (
            "/v1/capabilities/work",
            json!({ "latency_target_ms": 0 }),
            "latency_target_ms",
        ),
        (
            "/v1/priorities",
            json!({ "multipliers": { "finance": -1 } }),
            "multipliers.finance",
        ),
    ] {
        let answer = put(&stack, path, body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["details"]["field"], field, "{body}");
    }
    assert_eq!(state_items(&stack).await, 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slots_are_limited_idempotent_given_back_and_expire_with_their_lease() {
    let stack = api_only_stack("slots").await;
    let store = &stack.learn_deps().store;
    let capacities: Resources = [("gpu".to_string(), 2)].into();
    let limits = Limits {
        max_concurrency: Some(2),
        capacities: &capacities,
    };
    let one_gpu: Resources = [("gpu".to_string(), 1)].into();
    let now = now_ms();
    let hold = |holder: &'static str, until_ms: i64| SlotHold {
        holder,
        needs: &one_gpu,
        until_ms,
    };
    let acme: TenantId = "acme".parse().unwrap();
    let box_agent: AgentName = "box".parse().unwrap();
    let take =
        |holder, until| store.acquire_slot(&acme, &box_agent, limits, hold(holder, until), now);
    assert_eq!(take("a", now + 60_000).await.unwrap(), SlotGrant::Held);
    assert_eq!(
        take("a", now + 60_000).await.unwrap(),
        SlotGrant::Held,
        "its own again"
    );
    assert_eq!(take("b", now + 1_000).await.unwrap(), SlotGrant::Held);
    assert_eq!(take("c", now + 60_000).await.unwrap(), SlotGrant::Full);
    let loads = store
        .loads(
            &"acme".parse().unwrap(),
            &[box_agent.clone(), "idle".parse().unwrap()],
            now,
        )
        .await
        .unwrap();
    assert_eq!(loads["box"].in_flight, 2);
    assert_eq!(loads["box"].resources_in_use["gpu"], 2);
    assert!(!loads.contains_key("idle"));

    // A holder that died: its slot is free once its lease ran out.
    let later = now + 2_000;
    let grant = store
        .acquire_slot(
            &"acme".parse().unwrap(),
            &box_agent,
            limits,
            hold("c", later + 60_000),
            later,
        )
        .await
        .unwrap();
    assert_eq!(grant, SlotGrant::Held);
    // Given back: room again; giving back twice changes nothing.
    store
        .release_slot(&"acme".parse().unwrap(), &box_agent, "a")
        .await
        .unwrap();
    store
        .release_slot(&"acme".parse().unwrap(), &box_agent, "a")
        .await
        .unwrap();
    let loads = store
        .loads(
            &"acme".parse().unwrap(),
            std::slice::from_ref(&box_agent),
            later,
        )
        .await
        .unwrap();
    assert_eq!(loads["box"].in_flight, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learned_decision_says_why_with_its_numbers_and_the_runner_up() {
    let stack = start_stack("reasoning", |_| {}).await;
    let server = agent_replying(AgentReply::ok(json!({}))).await;
    register_agent(&stack, "one", &server, &["work"]).await;
    register_agent(&stack, "two", &server, &["work"]).await;
    let id = submit(&stack, &single("work", json!({}))).await;
    let workflow = wait_until_finished(&stack, &id).await;
    let decision = &workflow["tasks"][0]["decision"];
    assert_eq!(decision["strategy"], "learned");
    assert_eq!(decision["confidence"], 0.7, "no history yet: {decision}");
    let reasoning = decision["reasoning"].as_str().unwrap();
    assert!(reasoning.contains("Thompson sampling"), "{reasoning}");
    assert!(reasoning.contains("runner-up"), "{reasoning}");
    assert_eq!(decision["fallbacks"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn urgent_work_travels_through_its_own_queues() {
    let stack = api_only_stack("bands").await;
    let server = agent_replying(AgentReply::ok(json!({}))).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let tasks = json!([
        { "id": "urgent", "capability": "work", "priority": "critical" },
        { "id": "high", "capability": "work", "priority": "high" },
        { "id": "ordinary", "capability": "work" }
    ]);
    submit(&stack, &json!({ "name": "bands", "tasks": tasks })).await;
    for queue in ["RouteUrgentQueue", "RouteHighQueue", "RouteQueue"] {
        assert_eq!(queue_depth(&stack, queue).await, 1, "{queue}");
    }
    let message = receive_one(&stack, "RouteUrgentQueue").await;
    assert!(message.body().unwrap().contains("\"band\":\"urgent\""));
    let routed = baton_route::handle_batch(stack.route_deps(), sqs_event(&[&message]))
        .await
        .unwrap();
    assert!(routed.batch_item_failures.is_empty());
    assert_eq!(queue_depth(&stack, "ExecuteUrgentQueue").await, 1);
    assert_eq!(queue_depth(&stack, "ExecuteQueue").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plan_estimates_the_critical_path_from_learned_latencies() {
    let stack = start_stack("plan", |_| {}).await;
    let server = agent_replying(AgentReply::ok(json!({})).after(Duration::from_millis(150))).await;
    register_agent(&stack, "worker", &server, &["work"]).await;
    let answer = post(&stack, "/v1/workflows", &diamond("work").to_string()).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let plan = &answer.body["plan"];
    // Nothing learned yet: the default for each of the three stages on the critical path.
    assert_eq!(plan["estimated_duration_ms"], 3_000, "{plan}");
    assert_eq!(plan["estimates"][0]["source"], "default");
    assert!((plan["parallelism"].as_f64().unwrap() - 4.0 / 3.0).abs() < 1e-9);
    let id = answer.body["workflow_id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );
    learned_stats(&stack, "worker", "work", 4).await;

    // Once latencies are learned, the plan uses the favoured agent's p50.
    let view = get(&stack, &format!("/v1/workflows/{id}/plan")).await;
    assert_eq!(view.status, 200, "{:?}", view.body);
    let plan = &view.body["plan"];
    assert_eq!(
        plan["estimates"][0]["source"], "learned p50 of `worker`",
        "{plan}"
    );
    let estimate = plan["estimated_duration_ms"].as_u64().unwrap();
    let p50 = plan["estimates"][0]["duration_ms"].as_u64().unwrap();
    assert!(p50 >= 150, "{plan}");
    assert_eq!(estimate, 3 * p50);
    assert_eq!(plan["critical_path"].as_array().unwrap().len(), 3);
    assert_eq!(get(&stack, "/v1/workflows/nope/plan").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resent_task_that_finds_its_agent_full_at_execution_waits_and_is_not_dropped() {
    let stack = api_only_stack("resent-waits").await;
    let server = agent_replying(AgentReply::ok(json!({}))).await;
    register(
        &stack,
        json!({ "name": "single", "endpoint": server.url, "capabilities": ["work"],
                "max_concurrency": 1 }),
    )
    .await;
    let id = submit(&stack, &single("work", json!({}))).await;
    // Nobody took the task in time: cleanup sends it again (its second send, dispatch 1).
    let resend_at = now_ms() + stack.settings.dispatch_timeout.as_millis() as i64 + 1_000;
    assert_eq!(sweep_at(&stack, resend_at).await.redispatched, 1);
    let mut resent = None;
    for _ in 0..2 {
        let message = receive_one(&stack, "RouteQueue").await;
        if message.body().unwrap().contains("\"dispatch\":1") {
            resent = Some(message);
        }
    }
    let resent = resent.expect("the resend is on the route queue");
    let routed = baton_route::handle_batch(stack.route_deps(), sqs_event(&[&resent]))
        .await
        .unwrap();
    assert!(routed.batch_item_failures.is_empty());

    // Between routing and execution another call takes the agent's only slot.
    let store = &stack.learn_deps().store;
    let no_needs = Resources::new();
    let limits = Limits {
        max_concurrency: Some(1),
        capacities: &no_needs,
    };
    let hold = SlotHold {
        holder: "someone-else",
        needs: &no_needs,
        until_ms: now_ms() + 60_000,
    };
    let taken = store
        .acquire_slot(
            &"default".parse().unwrap(),
            &"single".parse().unwrap(),
            limits,
            hold,
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(taken, SlotGrant::Held);
    let execute = receive_one(&stack, "ExecuteQueue").await;
    assert!(execute.body().unwrap().contains("\"dispatch\":1"));
    let executed = baton_execute_agent::handle_batch(stack.execute_deps(), sqs_event(&[&execute]))
        .await
        .unwrap();
    assert!(executed.batch_item_failures.is_empty());

    // The task waits as the live send it is: back on the route queue, still queued, and the
    // agent was not called.
    let waiting = receive_one(&stack, "RouteQueue").await;
    let body = waiting.body().unwrap();
    assert!(
        body.contains("\"dispatch\":1") && body.contains("\"waits\":1"),
        "{body}"
    );
    let workflow = workflow_view(&stack, &id).await;
    assert_eq!(workflow["tasks"][0]["status"], "queued");
    assert!(server.calls().is_empty());
}
