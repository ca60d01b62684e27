//! Limits that keep one client's habits from costing everyone: lists on items stay bounded
//! however often a client appends to them, and the health sweep's probes are shared fairly
//! among tenants whatever a tenant leaves in the sweeps index.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use baton_local::agents::{AgentReply, AgentServer};
use baton_local::stack::LocalStack;
use baton_tests::*;
use baton_types::agent::AgentRegistration;
use baton_types::control::MAX_CONTROL_EVENTS;
use baton_types::health::HealthCheckInput;
use serde_json::{json, Value};

/// An item's size as DynamoDB counts it (names and values; numbers as their digits, which
/// is no less than DynamoDB's count), so a bound on it is a bound on what each write costs.
fn item_bytes(item: &HashMap<String, AttributeValue>) -> usize {
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.len(),
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::Ss(set) | AttributeValue::Ns(set) => set.iter().map(String::len).sum(),
            AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value(v)).sum::<usize>(),
            AttributeValue::M(map) => {
                3 + map
                    .iter()
                    .map(|(k, v)| 1 + k.len() + value(v))
                    .sum::<usize>()
            }
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

async fn workflow_item(stack: &LocalStack, id: &str) -> HashMap<String, AttributeValue> {
    stack
        .clients
        .dynamodb
        .get_item()
        .table_name(&stack.settings.state_table)
        .key("pk", AttributeValue::S(format!("default#WF#{id}")))
        .key("sk", AttributeValue::S("WORKFLOW".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .expect("the workflow record")
}

async fn control(stack: &LocalStack, id: &str, action: &str) -> Answer {
    post(stack, &format!("/v1/workflows/{id}/{action}"), "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_pauses_and_resumes_keep_the_workflow_record_small_and_working() {
    pauses_and_resumes(100).await;
}

/// About ten minutes on moto, so it runs with the benchmarks (`infra/scale.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "minutes long: infra/scale.sh runs it"]
async fn a_thousand_pauses_and_resumes_keep_the_workflow_record_small_and_working() {
    pauses_and_resumes(1_000).await;
}

/// `pairs` pauses and resumes of a workflow whose one task is running, then it finishes.
async fn pauses_and_resumes(pairs: usize) {
    let stack = start_stack(&format!("control-loop-{pairs}"), |_| {}).await;
    let gate = GatedAgent::start().await;
    // The longest time-out an agent may have, and attempts to spare: if the loop outlasts a
    // call, the attempt times out while paused and the next resume sends the retry.
    register(
        &stack,
        json!({ "name": "gate", "endpoint": gate.url, "capabilities": ["gate"],
                "timeout_ms": 120000 }),
    )
    .await;
    let id = submit(
        &stack,
        &json!({ "name": "loop", "tasks": [{ "id": "a", "capability": "gate",
            "retry": { "max_attempts": 10, "backoff": "fixed", "base_ms": 50, "jitter": "none" } }] }),
    )
    .await;
    eventually("a running", || async {
        let view = workflow_view(&stack, &id).await;
        (task(&view, "a")["status"] == "running").then_some(())
    })
    .await;

    for i in 0..pairs {
        for (action, status) in [("pause", "paused"), ("resume", "running")] {
            let answer = control(&stack, &id, action).await;
            assert_eq!(answer.status, 200, "{action} #{i}: {:?}", answer.body);
            assert_eq!(
                answer.body["status"], status,
                "{action} #{i}: {:?}",
                answer.body
            );
            assert_eq!(
                answer.body["changed"], true,
                "{action} #{i}: {:?}",
                answer.body
            );
        }
    }

    // The record keeps the newest events and counts the others: every control is accounted
    // for, and the item stays small (each write on it is charged by its size).
    let item = workflow_item(&stack, &id).await;
    let kept = match item.get("controls") {
        Some(AttributeValue::L(events)) => events.len(),
        other => panic!("controls: {other:?}"),
    };
    let dropped: usize = match item.get("controls_dropped") {
        Some(AttributeValue::N(n)) => n.parse().expect("a count"),
        other => panic!("controls_dropped: {other:?}"),
    };
    assert_eq!(kept, MAX_CONTROL_EVENTS);
    assert_eq!(kept + dropped, 2 * pairs, "every control counted");
    let bytes = item_bytes(&item);
    assert!(bytes < 4_096, "the workflow record holds {bytes} bytes");
    let newest: Value = match item.get("controls").and_then(|l| l.as_l().ok()?.last()) {
        Some(AttributeValue::S(event)) => serde_json::from_str(event).expect("an event"),
        other => panic!("last event: {other:?}"),
    };
    assert_eq!(newest["event"], "resumed", "the newest is kept");

    // It still works: it resumed, and it finishes.
    gate.open();
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");
    let history = get(&stack, &format!("/v1/workflows/{id}/history")).await;
    assert_eq!(history.status, 200, "{:?}", history.body);
    let events = history.body["events"].as_array().expect("events");
    let controls = events
        .iter()
        .filter(|e| e["event"] == "paused" || e["event"] == "resumed")
        .count();
    assert_eq!(controls, MAX_CONTROL_EVENTS, "the kept controls are shown");
    assert_eq!(events.last().map(|e| &e["event"]), Some(&json!("finished")));
}

/// An agent of `tenant` with a health check, written as the registry writes it.
async fn put_checked_agent(
    stack: &LocalStack,
    tenant: &str,
    name: &str,
    server: &AgentServer,
    enabled: bool,
) {
    let registration = AgentRegistration {
        enabled,
        health_check: Some(HealthCheckInput {
            path: "/health".into(),
            interval_s: Some(3_600),
        }),
        ..AgentRegistration::http(name, &server.url, &["work"])
    };
    stack
        .put_agent(tenant, registration)
        .await
        .expect("agent stored");
}

fn agent_key(tenant: &str, name: &str) -> [(String, AttributeValue); 2] {
    [
        ("pk".into(), AttributeValue::S(format!("{tenant}#AGENTS"))),
        ("sk".into(), AttributeValue::S(format!("AGENT#{name}"))),
    ]
}

/// The agent's item as stored.
async fn agent_item(
    stack: &LocalStack,
    tenant: &str,
    name: &str,
) -> HashMap<String, AttributeValue> {
    stack
        .clients
        .dynamodb
        .get_item()
        .table_name(&stack.settings.state_table)
        .set_key(Some(agent_key(tenant, name).into_iter().collect()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .expect("the agent")
}

/// The health checks of `tenant` the sweeps index holds.
async fn indexed_checks(stack: &LocalStack, tenant: &str) -> usize {
    let mut count = 0;
    let mut start = None;
    loop {
        let out = stack
            .clients
            .dynamodb
            .query()
            .table_name(&stack.settings.state_table)
            .index_name("sweeps")
            .key_condition_expression("sweep_shard = :health")
            .expression_attribute_values(":health", AttributeValue::S("HEALTH".into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("query");
        count += out
            .items()
            .iter()
            .filter(|i| {
                i["pk"]
                    .as_s()
                    .is_ok_and(|pk| pk == &format!("{tenant}#AGENTS"))
            })
            .count();
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return count,
        }
    }
}

fn checked(item: &HashMap<String, AttributeValue>) -> bool {
    item.contains_key("health")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disabled_agents_with_health_checks_do_not_stop_the_probes_of_other_tenants() {
    let stack = start_stack("health-disabled", |_| {}).await;
    let server = agent_replying(AgentReply::ok(json!({ "ok": true }))).await;
    // 150 disabled agents with health checks, older than anyone's: half disabled as the
    // registry writes them now, half as it used to (still in the sweeps index).
    for i in 0..150 {
        let name = format!("idle-{i:03}");
        let legacy = i % 2 == 0;
        put_checked_agent(&stack, "crowd", &name, &server, legacy).await;
        if legacy {
            stack
                .clients
                .dynamodb
                .update_item()
                .table_name(&stack.settings.state_table)
                .set_key(Some(agent_key("crowd", &name).into_iter().collect()))
                .update_expression("SET enabled = :no")
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .send()
                .await
                .expect("disabled in place");
        }
    }
    register(
        &stack,
        json!({ "name": "watched", "endpoint": server.url, "capabilities": ["work"],
                "health_check": { "path": "/health", "interval_s": 3600 } }),
    )
    .await;

    // Sweeps as the schedule would run them, each a little later than everything written.
    let mut sweeps = 0;
    while !checked(&agent_item(&stack, "default", "watched").await) {
        assert!(
            sweeps < 2,
            "the enabled agent was not probed in {sweeps} sweeps"
        );
        let report = sweep_at(&stack, baton_types::clock::now_ms() + 1_000).await;
        assert_eq!(report.errors, 0, "{report:?}");
        sweeps += 1;
    }
    assert_eq!(
        agent_view(&stack, "watched").await["health"]["status"],
        "healthy"
    );
    // The disabled ones the sweep came across left the index; none was probed.
    assert_eq!(indexed_checks(&stack, "crowd").await, 0);
    for i in 0..150 {
        assert!(!checked(
            &agent_item(&stack, "crowd", &format!("idle-{i:03}")).await
        ));
    }

    // Disabling takes an agent out of the index; enabling puts it back, due at once.
    let disabled = post(&stack, "/v1/agents/watched/disable", "").await;
    assert_eq!(disabled.status, 200, "{:?}", disabled.body);
    let item = agent_item(&stack, "default", "watched").await;
    assert!(
        !item.contains_key("sweep_shard") && !item.contains_key("sweep_at"),
        "{item:?}"
    );
    let before = agent_view(&stack, "watched").await["health"]["checked_at"].clone();
    let enabled = post(&stack, "/v1/agents/watched/enable", "").await;
    assert_eq!(enabled.status, 200, "{:?}", enabled.body);
    let item = agent_item(&stack, "default", "watched").await;
    assert_eq!(
        item.get("sweep_shard"),
        Some(&AttributeValue::S("HEALTH".into()))
    );
    let report = sweep_at(&stack, baton_types::clock::now_ms() + 1_000).await;
    assert_eq!(report.probed, 1, "{report:?}");
    let after = agent_view(&stack, "watched").await["health"]["checked_at"].clone();
    assert_ne!(before, after, "probed again after the enable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenants_many_due_agents_do_not_starve_another_tenants_one() {
    let stack = start_stack("health-fair", |_| {}).await;
    let server = agent_replying(AgentReply::ok(json!({ "ok": true }))).await;
    for i in 0..120 {
        put_checked_agent(&stack, "busy", &format!("a-{i:03}"), &server, true).await;
    }
    put_checked_agent(&stack, "quiet", "only", &server, true).await;

    // One sweep: the quiet tenant's agent, due last, is probed among the first.
    let report = sweep_at(&stack, baton_types::clock::now_ms() + 1_000).await;
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(
        report.probed,
        baton_cleanup::PROBE_LIMIT as u32,
        "{report:?}"
    );
    assert!(
        checked(&agent_item(&stack, "quiet", "only").await),
        "the quiet tenant's agent waited behind the busy one's"
    );
    // The busy tenant's rest come next.
    let report = sweep_at(&stack, baton_types::clock::now_ms() + 1_000).await;
    assert_eq!(report.probed, 21, "{report:?}");
    for i in 0..120 {
        assert!(checked(
            &agent_item(&stack, "busy", &format!("a-{i:03}")).await
        ));
    }
}
