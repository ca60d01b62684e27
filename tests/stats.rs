//! `GET /v1/stats` after real work on the local stack, and `Server-Timing` on the API's answers.

use std::sync::Arc;
use std::time::Duration;

use baton_local::agents::AgentReply;
use baton_tests::*;
use serde_json::{json, Value};

/// Every queue and dead-letter queue of the template, as the stats name them.
const QUEUES: [&str; 10] = [
    "route",
    "route-high",
    "route-urgent",
    "execute",
    "execute-high",
    "execute-urgent",
    "learn",
    "route-dlq",
    "execute-dlq",
    "learn-dlq",
];

fn queue<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["queues"]
        .as_array()
        .and_then(|queues| queues.iter().find(|q| q["name"] == name))
        .unwrap_or_else(|| panic!("queue {name} in {stats:#}"))
}

fn share<'a>(stats: &'a Value, agent: &str) -> &'a Value {
    stats["routing"]["service_distribution"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["agent"] == agent))
        .unwrap_or_else(|| panic!("agent {agent} in {stats:#}"))
}

async fn stats_of(stack: &baton_local::stack::LocalStack, tenant: Option<&str>) -> Value {
    let answer = request(stack, reqwest::Method::GET, "/v1/stats", None, tenant).await;
    assert_eq!(answer.status, 200, "{:#}", answer.body);
    answer.body
}

/// The stats as the operator sees them: with the deployment's queues.
async fn operator_stats(stack: &baton_local::stack::LocalStack) -> Value {
    let scopes = [("x-baton-scopes", "openid baton/operator")];
    let answer = request_with(
        stack,
        reqwest::Method::GET,
        "/v1/stats",
        json!(null),
        &scopes,
    )
    .await;
    assert_eq!(answer.status, 200, "{:#}", answer.body);
    answer.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_show_routing_learning_health_queues_and_the_tenants_running_workflows() {
    let stack = start_stack("stats", |_| {}).await;
    let worker = agent(Arc::new(|_: &Value| AgentReply::ok(json!({ "ok": true })))).await;
    register_agent(&stack, "worker", &worker, &["work"]).await;
    let id = submit(&stack, &diamond("work")).await;
    assert_eq!(
        wait_until_finished(&stack, &id).await["status"],
        "succeeded"
    );
    learned_stats(&stack, "worker", "work", 4).await;

    // A workflow whose only task is still with its agent when the stats are read.
    let slow = agent_replying(AgentReply::ok(json!({})).after(Duration::from_secs(3))).await;
    register_agent(&stack, "slow", &slow, &["ponder"]).await;
    let workflow = json!({ "name": "slow", "tasks": [{ "id": "think", "capability": "ponder" }] });
    let running = submit(&stack, &workflow).await;
    eventually("the slow agent is called", || async {
        (!slow.calls().is_empty()).then_some(())
    })
    .await;
    // A message that ended in the route dead-letter queue.
    let dlq = stack
        .queue_url("RouteDeadLetterQueue")
        .expect("dlq")
        .to_string();
    stack
        .clients
        .sqs
        .send_message()
        .queue_url(&dlq)
        .message_body("{\"v\":1}")
        .send()
        .await
        .expect("send to the dead-letter queue");

    let stats = stats_of(&stack, None).await;
    assert!(stats["as_of"].is_string());
    // Routing: the diamond's four calls all went to the one agent that offers `work`.
    assert_eq!(stats["routing"]["calls"], 4, "{stats:#}");
    let worker_share = share(&stats, "worker");
    assert_eq!(worker_share["calls"], 4);
    assert_eq!(worker_share["share"], 1.0);
    assert_eq!(worker_share["success_rate"], 1.0);
    assert_eq!(worker_share["registered"], true);
    assert_eq!(share(&stats, "slow")["calls"], 0, "its call is not over");
    assert_eq!(share(&stats, "slow")["share"], 0.0);
    // Learning: one task type, four outcomes, all successful.
    let learning = &stats["learning"];
    assert_eq!(learning["task_types"], 1);
    assert_eq!(learning["outcomes"], 4);
    assert_eq!(learning["failures"], 0);
    assert_eq!(learning["success_rate"], 1.0);
    assert_eq!(learning["by_task_type"][0]["task_type"], "work");
    assert_eq!(learning["by_task_type"][0]["agents"], 1);
    // Health: the registry's summary, as `GET /v1/agents/health` gives it.
    let health = get(&stack, "/v1/agents/health").await.body;
    assert_eq!(stats["health"], health);
    assert_eq!(stats["health"]["total"], 2);
    assert_eq!(stats["health"]["enabled"], 2);
    assert_eq!(stats["health"]["circuits_open"], json!([]));
    // Queues are the deployment's: a tenant sees none, the operator all ten, each with its
    // depth.
    assert!(stats.get("queues").is_none(), "{stats:#}");
    let stats = operator_stats(&stack).await;
    let names: Vec<&str> = stats["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, QUEUES);
    for name in QUEUES {
        let q = queue(&stats, name);
        assert_eq!(q["dead_letter"], name.ends_with("-dlq"), "{q}");
        for depth in ["visible", "in_flight", "delayed"] {
            assert!(q[depth].is_u64(), "{name}.{depth}: {q}");
        }
        if !name.ends_with("-dlq") {
            assert!(
                q["oldest_age_s"].is_null(),
                "a working queue is never peeked: {q}"
            );
        }
    }
    let route_dlq = queue(&stats, "route-dlq");
    assert_eq!(route_dlq["visible"], 1, "{route_dlq}");
    assert!(
        route_dlq["oldest_age_s"].as_u64().is_some_and(|s| s < 60),
        "{route_dlq}"
    );
    assert!(
        queue(&stats, "learn-dlq")["oldest_age_s"].is_null(),
        "empty"
    );
    // Workflows: the slow one runs.
    assert_eq!(stats["workflows"]["running"], 1, "{stats:#}");

    // The peek left the dead-letter message where it was.
    let again = operator_stats(&stack).await;
    assert_eq!(queue(&again, "route-dlq")["visible"], 1);

    // Another tenant sees nothing of this one's agents, learning or workflows.
    let other = stats_of(&stack, Some("other")).await;
    assert_eq!(other["routing"]["calls"], 0);
    assert_eq!(other["routing"]["service_distribution"], json!([]));
    assert_eq!(other["learning"]["outcomes"], 0);
    assert_eq!(other["health"]["total"], 0);
    assert_eq!(other["workflows"]["running"], 0);
    assert!(other.get("queues").is_none());

    assert_eq!(
        wait_until_finished(&stack, &running).await["status"],
        "succeeded"
    );
    learned_stats(&stack, "slow", "ponder", 1).await;
    let after = stats_of(&stack, None).await;
    assert_eq!(after["workflows"]["running"], 0);
    assert_eq!(after["routing"]["calls"], 5);
    assert_eq!(share(&after, "slow")["share"], 0.2);
    assert_eq!(after["learning"]["task_types"], 2);
}

/// `Server-Timing`'s entries, by name, each with its duration in milliseconds.
fn server_timing(response: &reqwest::Response) -> Vec<(String, f64)> {
    let header = response
        .headers()
        .get("server-timing")
        .unwrap_or_else(|| panic!("no Server-Timing on {}", response.url()))
        .to_str()
        .expect("ASCII");
    header
        .split(", ")
        .map(|entry| {
            let (name, duration) = entry
                .split_once(";dur=")
                .unwrap_or_else(|| panic!("`{entry}` is not name;dur=ms in {header}"));
            let ms: f64 = duration.parse().expect("a duration");
            assert!(ms >= 0.0 && !name.is_empty(), "{entry}");
            (name.to_string(), ms)
        })
        .collect()
}

fn names(timing: &[(String, f64)]) -> Vec<&str> {
    timing.iter().map(|(name, _)| name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_server_timing_with_its_phases_and_total() {
    let stack = api_only_stack("timing").await;
    let client = baton_local::tenant_client("default").build().unwrap();
    let url = |path: &str| format!("{}{path}", stack.api_url);

    let health = client.get(url("/health")).send().await.expect("answer");
    assert_eq!(health.status(), 200);
    assert_eq!(names(&server_timing(&health)), ["total"]);

    let missing = client.get(url("/v1/nowhere")).send().await.expect("answer");
    assert_eq!(missing.status(), 404);
    assert_eq!(names(&server_timing(&missing)), ["total"]);

    let submitted = client
        .post(url("/v1/workflows"))
        .header("content-type", "application/json")
        .body(diamond("work").to_string())
        .send()
        .await
        .expect("answer");
    assert_eq!(submitted.status(), 202);
    let timing = server_timing(&submitted);
    for phase in ["validate", "store", "enqueue", "total"] {
        assert!(names(&timing).contains(&phase), "{phase} in {timing:?}");
    }
    assert_eq!(names(&timing).last(), Some(&"total"));
    let total = timing.last().expect("total").1;
    let store = timing.iter().find(|(n, _)| n == "store").expect("store").1;
    assert!(store <= total, "{timing:?}");

    // A refused submission says how long its validation took.
    let refused = client
        .post(url("/v1/workflows"))
        .header("content-type", "application/json")
        .body(json!({ "name": "", "tasks": [] }).to_string())
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 400);
    let timing = server_timing(&refused);
    assert!(names(&timing).contains(&"validate"), "{timing:?}");
    assert!(!names(&timing).contains(&"enqueue"), "{timing:?}");
}
