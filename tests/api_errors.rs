//! Bad input of every kind gets a 4xx with `{"error":{"code","message","details"}}` and
//! stores nothing.

use baton_tests::*;
use serde_json::json;

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{:#}", answer.body);
    let error = &answer.body["error"];
    assert_eq!(error["code"], code, "{:#}", answer.body);
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(error["details"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_workflows_get_clear_errors_and_store_nothing() {
    let stack = api_only_stack("badworkflows").await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", "{\"name\": \"x\", \"tasks\": [".into(), "invalid_json"),
        ("not an object", "[1, 2]".into(), "invalid_request"),
        ("empty body", "".into(), "invalid_request"),
        ("missing tasks", json!({ "name": "x" }).to_string(), "invalid_request"),
        ("tasks of the wrong type", json!({ "name": "x", "tasks": "a" }).to_string(), "invalid_request"),
        ("capability of the wrong type", json!({ "name": "x", "tasks": [{ "id": "a", "capability": 7 }] }).to_string(), "invalid_request"),
        ("unknown field", json!({ "name": "x", "tasks": [{ "id": "a", "capability": "c", "colour": "red" }] }).to_string(), "invalid_request"),
        ("empty workflow", json!({ "name": "x", "tasks": [] }).to_string(), "invalid_request"),
        ("blank name", json!({ "name": "  ", "tasks": [{ "id": "a", "capability": "c" }] }).to_string(), "invalid_request"),
        ("bad task id", json!({ "name": "x", "tasks": [{ "id": "a#1", "capability": "c" }] }).to_string(), "invalid_request"),
        ("duplicate ids", json!({ "name": "x", "tasks": [{ "id": "a", "capability": "c" }, { "id": "a", "capability": "c" }] }).to_string(), "invalid_request"),
        ("unknown dependency", json!({ "name": "x", "tasks": [{ "id": "a", "capability": "c", "depends_on": ["ghost"] }] }).to_string(), "invalid_request"),
    ];
    for (what, body, code) in &cases {
        let answer = post(&stack, "/v1/workflows", body).await;
        assert_error(&answer, 400, code);
        eprintln!("{what}: {}", answer.body["error"]["message"]);
    }
    let too_big = json!({ "name": "x", "tasks": [{ "id": "a", "capability": "c", "input": "x".repeat(70_000) }] });
    assert_error(
        &post(&stack, "/v1/workflows", &too_big.to_string()).await,
        400,
        "invalid_request",
    );
    let huge = "x".repeat(1_100_000);
    assert_error(
        &post(&stack, "/v1/workflows", &huge).await,
        413,
        "payload_too_large",
    );
    assert_eq!(
        state_items(&stack).await,
        0,
        "a rejected request stores nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_is_rejected_naming_the_cycle() {
    let stack = api_only_stack("cycle").await;
    let body = json!({ "name": "loop", "tasks": [
        { "id": "a", "capability": "c", "depends_on": ["c"] },
        { "id": "b", "capability": "c", "depends_on": ["a"] },
        { "id": "c", "capability": "c", "depends_on": ["b"] }
    ]});
    let answer = post(&stack, "/v1/workflows", &body.to_string()).await;
    assert_error(&answer, 400, "invalid_request");
    assert_eq!(
        answer.body["error"]["message"],
        "the tasks form a cycle: a -> b -> c -> a"
    );
    assert_eq!(
        answer.body["error"]["details"]["cycle"],
        json!(["a", "b", "c", "a"])
    );
    assert_eq!(state_items(&stack).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_routes_and_methods_are_client_errors() {
    let stack = api_only_stack("unknowns").await;
    assert_error(
        &get(&stack, "/v1/workflows/0190e6a0-0000-7000-8000-000000000000").await,
        404,
        "not_found",
    );
    assert_error(
        &get(&stack, "/v1/workflows/not%20an%20id").await,
        404,
        "not_found",
    );
    assert_error(&get(&stack, "/v1/agents/nobody").await, 404, "not_found");
    assert_error(&get(&stack, "/v2/everything").await, 404, "not_found");
    assert_error(
        &post(&stack, "/health", "{}").await,
        405,
        "method_not_allowed",
    );
    assert_error(
        &request(&stack, reqwest::Method::DELETE, "/v1/workflows", None, None).await,
        405,
        "method_not_allowed",
    );
    let health = get(&stack, "/health").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_agents_are_rejected_and_duplicates_conflict() {
    let stack = api_only_stack("badagents").await;
    let cases = [
        json!({ "name": "a", "endpoint": "not a url", "capabilities": ["c"] }),
        json!({ "name": "a", "endpoint": "ftp://host/x", "capabilities": ["c"] }),
        json!({ "name": "a", "endpoint": "http://", "capabilities": ["c"] }),
        json!({ "name": "a", "endpoint": "http://127.0.0.1:9/", "capabilities": [] }),
        json!({ "name": "a b", "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] }),
        json!({ "name": "a", "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"], "timeout_ms": 0 }),
        json!({ "name": "a", "kind": "carrier-pigeon", "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] }),
        json!({ "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] }),
    ];
    for case in &cases {
        assert_error(
            &post(&stack, "/v1/agents", &case.to_string()).await,
            400,
            "invalid_request",
        );
    }
    let bad_url = post(&stack, "/v1/agents", &cases[0].to_string()).await;
    assert_eq!(bad_url.body["error"]["details"]["field"], "endpoint");
    assert_eq!(state_items(&stack).await, 0);

    let good = json!({ "name": "a", "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] });
    assert_eq!(
        post(&stack, "/v1/agents", &good.to_string()).await.status,
        201
    );
    assert_error(
        &post(&stack, "/v1/agents", &good.to_string()).await,
        409,
        "conflict",
    );
    let listed = get(&stack, "/v1/agents").await;
    assert_eq!(listed.body["agents"].as_array().map(Vec::len), Some(1));
    assert_eq!(get(&stack, "/v1/agents/a").await.body["timeout_ms"], 30_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_gateway_event_reaches_the_handler_as_lambda_delivers_it() {
    use lambda_http::request::LambdaRequest;
    let stack = api_only_stack("apigw").await;
    let api = baton_orchestrate::Api::new(
        stack.clients.store(&stack.settings),
        stack.clients.queues(&stack.settings),
        stack.settings.clone(),
    );
    // A recorded-shape HTTP API (payload v2) event with a base64 body, as API Gateway sends it.
    let fixture = include_str!("fixtures/apigw-v2-post-workflow.json");
    let event: LambdaRequest =
        serde_json::from_str(fixture).expect("fixture is an API Gateway event");
    let response = baton_orchestrate::handle_request(&api, event.into())
        .await
        .expect("the handler answers");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
    assert_eq!(body["error"]["message"], "the tasks form a cycle: a -> a");
    assert_eq!(state_items(&stack).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own_agents_and_bad_tenant_ids_are_refused() {
    use reqwest::Method;
    let stack = api_only_stack("tenants").await;
    let agent = json!({ "name": "a", "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] })
        .to_string();
    let created = request(
        &stack,
        Method::POST,
        "/v1/agents",
        Some(&agent),
        Some("acme"),
    )
    .await;
    assert_eq!(created.status, 201);
    let theirs = request(&stack, Method::GET, "/v1/agents", None, Some("acme")).await;
    assert_eq!(theirs.body["agents"].as_array().map(Vec::len), Some(1));
    let others = request(&stack, Method::GET, "/v1/agents", None, Some("globex")).await;
    assert_eq!(others.body["agents"].as_array().map(Vec::len), Some(0));
    let bad = request(&stack, Method::GET, "/v1/agents", None, Some("acme#AGENTS")).await;
    assert_error(&bad, 400, "invalid_request");
    assert_eq!(bad.body["error"]["details"]["header"], "x-tenant-id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_are_refused_naming_the_field_and_store_nothing() {
    let stack = api_only_stack("badpolicies").await;
    let task = |extra: serde_json::Value| {
        let mut t = json!({ "id": "a", "capability": "c" });
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "name": "x", "tasks": [t] })
    };
    let workflows = vec![
        (
            task(json!({ "retry": { "max_attempts": 0 } })),
            "retry.max_attempts",
        ),
        (
            task(json!({ "retry": { "max_attempts": 11 } })),
            "retry.max_attempts",
        ),
        (
            task(json!({ "retry": { "base_ms": -100 } })),
            "retry.base_ms",
        ),
        (task(json!({ "retry": { "max_ms": -1 } })), "retry.max_ms"),
        (
            task(json!({ "retry": { "base_ms": 5000, "max_ms": 1000 } })),
            "retry.base_ms",
        ),
        (
            task(json!({ "retry": { "backoff": "quadratic" } })),
            "retry.backoff",
        ),
        (
            task(json!({ "retry": { "jitter": "some" } })),
            "retry.jitter",
        ),
        (task(json!({ "timeout_s": 0 })), "timeout_s"),
        (task(json!({ "timeout_s": 901 })), "timeout_s"),
        (
            json!({ "name": "x", "defaults": { "retry": { "max_attempts": 99 } }, "tasks": [{ "id": "a", "capability": "c" }] }),
            "defaults.retry.max_attempts",
        ),
        (
            json!({ "name": "x", "timeout_s": -5, "tasks": [{ "id": "a", "capability": "c" }] }),
            "timeout_s",
        ),
    ];
    for (body, field) in &workflows {
        let answer = post(&stack, "/v1/workflows", &body.to_string()).await;
        assert_error(&answer, 400, "invalid_request");
        assert_eq!(answer.body["error"]["details"]["field"], *field, "{body}");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "the message names {field}: {:#}",
            answer.body
        );
    }
    let agent = |extra: serde_json::Value| {
        let mut a =
            json!({ "name": "a", "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] });
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };
    let agents = vec![
        (
            agent(json!({ "retry": { "max_attempts": 0 } })),
            "retry.max_attempts",
        ),
        (
            agent(json!({ "retry": { "backoff": "random" } })),
            "retry.backoff",
        ),
        (
            agent(json!({ "health_check": { "path": "health" } })),
            "health_check.path",
        ),
        (
            agent(json!({ "health_check": { "path": "//evil.example/health" } })),
            "health_check.path",
        ),
        (
            agent(json!({ "health_check": { "path": "/health", "interval_s": 0 } })),
            "health_check.interval_s",
        ),
        (
            agent(json!({ "circuit_breaker": { "failure_rate": 2 } })),
            "circuit_breaker.failure_rate",
        ),
        (
            agent(json!({ "circuit_breaker": { "cooldown_s": 0 } })),
            "circuit_breaker.cooldown_s",
        ),
    ];
    for (body, field) in &agents {
        let answer = post(&stack, "/v1/agents", &body.to_string()).await;
        assert_error(&answer, 400, "invalid_request");
        assert_eq!(answer.body["error"]["details"]["field"], *field, "{body}");
    }
    assert_eq!(
        state_items(&stack).await,
        0,
        "a rejected request stores nothing"
    );
}
