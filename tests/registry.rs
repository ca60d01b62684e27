//! The registry: replace and patch conditional on the version
//! read, delete, enable and disable behind the dependency guard, lists by category,
//! capability and state, and the summaries by category and by health.

use baton_local::stack::LocalStack;
use baton_tests::*;
use reqwest::Method;
use serde_json::{json, Value};

/// An answer with the `ETag` it carried.
struct Tagged {
    status: u16,
    etag: Option<String>,
    body: Value,
}

async fn call(
    stack: &LocalStack,
    method: Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> Tagged {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", stack.api_url))
        .header("x-tenant-id", baton_local::LOCAL_TENANT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    let response = request.send().await.expect("API answers");
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body: {text}"));
    Tagged { status, etag, body }
}

fn agent(name: &str, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "endpoint": format!("http://127.0.0.1:9/{name}"),
        "capabilities": ["work"],
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

async fn create(stack: &LocalStack, body: Value) -> Tagged {
    let created = call(stack, Method::POST, "/v1/agents", Some(body), None).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created
}

fn error_code(answer: &Tagged) -> &str {
    answer.body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_and_patch_need_the_version_read_so_two_editors_cannot_overwrite_each_other() {
    let stack = api_only_stack("registry-versions").await;
    let created = create(&stack, agent("planner", json!({ "category": "planning" }))).await;
    assert_eq!(created.etag.as_deref(), Some("\"1\""));
    let read = call(&stack, Method::GET, "/v1/agents/planner", None, None).await;
    assert_eq!(read.etag.as_deref(), Some("\"1\""));

    // Two editors read version 1; the first one's patch wins, the second is refused.
    let first = call(
        &stack,
        Method::PATCH,
        "/v1/agents/planner",
        Some(json!({ "timeout_ms": 2000, "description": "plans" })),
        Some("\"1\""),
    )
    .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.etag.as_deref(), Some("\"2\""));
    assert_eq!(first.body["timeout_ms"], 2000);
    assert_eq!(first.body["category"], "planning", "untouched fields stay");
    let second = call(
        &stack,
        Method::PATCH,
        "/v1/agents/planner",
        Some(json!({ "timeout_ms": 9000 })),
        Some("\"1\""),
    )
    .await;
    assert_eq!(second.status, 412, "{:?}", second.body);
    assert_eq!(error_code(&second), "version_mismatch");
    let now = call(&stack, Method::GET, "/v1/agents/planner", None, None).await;
    assert_eq!(now.body["timeout_ms"], 2000);
    assert_eq!(now.body["version"], 2);

    // A change without the version read is refused, and changes nothing.
    let blind_put = call(
        &stack,
        Method::PUT,
        "/v1/agents/planner",
        Some(agent("planner", json!({}))),
        None,
    )
    .await;
    assert_eq!(blind_put.status, 428, "{:?}", blind_put.body);
    let blind_patch = call(
        &stack,
        Method::PATCH,
        "/v1/agents/planner",
        Some(json!({ "timeout_ms": 1 })),
        None,
    )
    .await;
    assert_eq!(blind_patch.status, 428, "{:?}", blind_patch.body);
    let garbled = call(
        &stack,
        Method::PATCH,
        "/v1/agents/planner",
        Some(json!({ "timeout_ms": 1 })),
        Some("two"),
    )
    .await;
    assert_eq!(garbled.status, 400, "{:?}", garbled.body);

    // A replacement with the current version: the whole registration, nothing kept but the
    // creation time; `null` in a patch removes a field.
    let replaced = call(
        &stack,
        Method::PUT,
        "/v1/agents/planner",
        Some(json!({ "endpoint": "http://127.0.0.1:9/v2", "capabilities": ["plan"] })),
        Some("\"2\""),
    )
    .await;
    assert_eq!(replaced.status, 200, "{:?}", replaced.body);
    assert_eq!(replaced.etag.as_deref(), Some("\"3\""));
    assert_eq!(replaced.body["capabilities"], json!(["plan"]));
    assert!(replaced.body["category"].is_null());
    assert_eq!(replaced.body["created_at"], created.body["created_at"]);
    let removed = call(
        &stack,
        Method::PATCH,
        "/v1/agents/planner",
        Some(json!({ "description": "x", "timeout_ms": null })),
        Some("W/\"3\""),
    )
    .await;
    assert_eq!(removed.status, 200, "{:?}", removed.body);
    assert_eq!(removed.body["timeout_ms"], 30_000, "back to the default");

    // PUT creates an agent that does not exist yet; a rename is refused.
    let made = call(
        &stack,
        Method::PUT,
        "/v1/agents/fresh",
        Some(json!({ "endpoint": "http://127.0.0.1:9/fresh", "capabilities": ["work"] })),
        None,
    )
    .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let renamed = call(
        &stack,
        Method::PATCH,
        "/v1/agents/fresh",
        Some(json!({ "name": "other" })),
        Some("\"1\""),
    )
    .await;
    assert_eq!(renamed.status, 400, "{:?}", renamed.body);
    assert_eq!(renamed.body["error"]["details"]["field"], "name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_refuses_disabling_or_deleting_what_enabled_agents_need() {
    let stack = api_only_stack("registry-guard").await;
    create(&stack, agent("auth", json!({}))).await;
    let finance = create(&stack, agent("finance-ai", json!({ "requires": ["auth"] }))).await;
    assert_eq!(finance.body["requires"], json!(["auth"]));
    // `depends_on` is the deprecated name of `requires`: read as it, answered as `requires`.
    let email = create(&stack, agent("email-ai", json!({ "depends_on": ["auth"] }))).await;
    assert_eq!(email.body["requires"], json!(["auth"]));
    assert!(email.body.get("depends_on").is_none(), "{:#}", email.body);

    for (method, path) in [
        (Method::POST, "/v1/agents/auth/disable"),
        (Method::DELETE, "/v1/agents/auth"),
    ] {
        let refused = call(&stack, method, path, None, None).await;
        assert_eq!(refused.status, 409, "{:?}", refused.body);
        assert_eq!(error_code(&refused), "dependency_guard");
        assert_eq!(
            refused.body["error"]["message"],
            "`auth` is required by email-ai, finance-ai"
        );
        assert_eq!(
            refused.body["error"]["details"]["agents"],
            json!(["email-ai", "finance-ai"])
        );
    }
    let auth = call(&stack, Method::GET, "/v1/agents/auth", None, None).await;
    assert_eq!(
        (auth.body["enabled"].clone(), auth.body["version"].clone()),
        (json!(true), json!(1))
    );

    // With its dependents disabled, it can be disabled; then they cannot be enabled.
    for name in ["finance-ai", "email-ai"] {
        let off = call(
            &stack,
            Method::POST,
            &format!("/v1/agents/{name}/disable"),
            None,
            None,
        )
        .await;
        assert_eq!(off.status, 200, "{:?}", off.body);
        assert_eq!(off.body["enabled"], false);
    }
    let off = call(
        &stack,
        Method::POST,
        "/v1/agents/auth/disable",
        None,
        Some("\"1\""),
    )
    .await;
    assert_eq!(off.status, 200, "{:?}", off.body);
    let again = call(&stack, Method::POST, "/v1/agents/auth/disable", None, None).await;
    assert_eq!(
        (again.status, again.etag.as_deref()),
        (200, Some("\"2\"")),
        "a repeat changes nothing"
    );
    let refused = call(
        &stack,
        Method::POST,
        "/v1/agents/finance-ai/enable",
        None,
        None,
    )
    .await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    assert_eq!(
        refused.body["error"]["message"],
        "`finance-ai` needs auth, which is disabled"
    );
    let patched_on = call(
        &stack,
        Method::PATCH,
        "/v1/agents/email-ai",
        Some(json!({ "enabled": true })),
        Some("\"2\""),
    )
    .await;
    assert_eq!(patched_on.status, 409, "{:?}", patched_on.body);

    let on = call(&stack, Method::POST, "/v1/agents/auth/enable", None, None).await;
    assert_eq!(on.status, 200, "{:?}", on.body);
    let on = call(
        &stack,
        Method::POST,
        "/v1/agents/finance-ai/enable",
        None,
        None,
    )
    .await;
    assert_eq!(on.status, 200, "{:?}", on.body);

    // A disabled dependent does not hold an agent back from deletion; a deleted name is free.
    let stale = call(
        &stack,
        Method::DELETE,
        "/v1/agents/email-ai",
        None,
        Some("\"1\""),
    )
    .await;
    assert_eq!(stale.status, 412, "{:?}", stale.body);
    let deleted = call(&stack, Method::DELETE, "/v1/agents/email-ai", None, None).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(get(&stack, "/v1/agents/email-ai").await.status, 404);
    let gone = call(&stack, Method::DELETE, "/v1/agents/email-ai", None, None).await;
    assert_eq!(gone.status, 404);
    create(&stack, agent("email-ai", json!({}))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_circular_dependencies_and_reserved_names_are_refused_and_store_nothing() {
    let stack = api_only_stack("registry-bad").await;
    create(&stack, agent("a", json!({}))).await;
    create(&stack, agent("b", json!({ "requires": ["a"] }))).await;

    let unknown = call(
        &stack,
        Method::POST,
        "/v1/agents",
        Some(agent("c", json!({ "requires": ["ghost"] }))),
        None,
    )
    .await;
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    assert_eq!(unknown.body["error"]["details"]["field"], "requires");
    assert_eq!(get(&stack, "/v1/agents/c").await.status, 404);

    let cycle = call(
        &stack,
        Method::PATCH,
        "/v1/agents/a",
        Some(json!({ "requires": ["b"] })),
        Some("\"1\""),
    )
    .await;
    assert_eq!(cycle.status, 400, "{:?}", cycle.body);
    assert_eq!(
        cycle.body["error"]["details"]["agents"],
        json!(["a", "b", "a"])
    );
    let a = get(&stack, "/v1/agents/a").await;
    assert_eq!(
        (a.body["version"].clone(), a.body["requires"].clone()),
        (json!(1), json!([]))
    );

    for (body, field) in [
        (agent("health", json!({})), "name"),
        (agent("d", json!({ "requires": ["d"] })), "requires"),
        (agent("d", json!({ "depends_on": ["d"] })), "requires"),
        (
            agent("d", json!({ "requires": ["a"], "depends_on": ["a"] })),
            "requires",
        ),
        (agent("d", json!({ "category": "Not A Name!" })), "category"),
        (
            agent("d", json!({ "description": "x".repeat(1001) })),
            "description",
        ),
    ] {
        let refused = call(&stack, Method::POST, "/v1/agents", Some(body), None).await;
        assert_eq!(refused.status, 400, "{:?}", refused.body);
        assert_eq!(refused.body["error"]["details"]["field"], field);
    }
    let duplicate = call(
        &stack,
        Method::POST,
        "/v1/agents",
        Some(agent("a", json!({}))),
        None,
    )
    .await;
    assert_eq!(duplicate.status, 409, "{:?}", duplicate.body);
    let listed = get(&stack, "/v1/agents").await;
    assert_eq!(listed.body["agents"].as_array().map(Vec::len), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_and_the_summaries_count_by_category_and_health() {
    let stack = api_only_stack("registry-lists").await;
    create(
        &stack,
        agent(
            "ledger",
            json!({ "category": "finance", "capabilities": ["books"] }),
        ),
    )
    .await;
    create(
        &stack,
        agent(
            "payroll",
            json!({ "category": "finance", "enabled": false }),
        ),
    )
    .await;
    create(&stack, agent("mailer", json!({ "category": "email" }))).await;
    create(&stack, agent("misc", json!({}))).await;

    let names = |answer: &Answer| -> Vec<String> {
        answer.body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&get(&stack, "/v1/agents?category=finance").await),
        ["ledger", "payroll"]
    );
    assert_eq!(
        names(&get(&stack, "/v1/agents?enabled=false").await),
        ["payroll"]
    );
    assert_eq!(
        names(&get(&stack, "/v1/agents?capability=books").await),
        ["ledger"]
    );
    assert_eq!(
        names(&get(&stack, "/v1/agents?category=finance&enabled=true").await),
        ["ledger"]
    );
    let bad = get(&stack, "/v1/agents?enabled=maybe").await;
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    assert_eq!(bad.body["error"]["details"]["parameter"], "enabled");

    let categories = get(&stack, "/v1/agents/categories").await;
    assert_eq!(categories.status, 200, "{:?}", categories.body);
    assert_eq!(
        categories.body["categories"],
        json!([
            { "category": "email", "agents": ["mailer"], "enabled": 1 },
            { "category": "finance", "agents": ["ledger", "payroll"], "enabled": 1 },
            { "category": "uncategorized", "agents": ["misc"], "enabled": 1 },
        ])
    );
    let health = get(&stack, "/v1/agents/health").await;
    assert_eq!(health.status, 200, "{:?}", health.body);
    assert_eq!(
        (
            &health.body["total"],
            &health.body["enabled"],
            &health.body["disabled"],
            &health.body["unchecked"]
        ),
        (&json!(4), &json!(3), &json!(1), &json!(3))
    );
    assert_eq!(health.body["unreadable"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_write_response_was_lost_is_applied_once_and_answered_as_applied() {
    use baton_local::faults::{Fault, FaultPlan, FaultRule};
    let stack = start_stack("registry-lost", |s| {
        s.faults = Some(FaultPlan::default());
        s.run_route = false;
        s.run_execute = false;
        s.run_learn = false;
    })
    .await;
    let lose = |name: &str| {
        stack
            .faults()
            .expect("the fault proxy")
            .add_rule(FaultRule::once(
                "TransactWriteItems",
                &[&format!("AGENT#{name}")],
                Fault::LoseResponse,
            ))
            .expect("a rule for transactions");
    };
    lose("auth");
    create(&stack, agent("auth", json!({}))).await;
    lose("crm");
    create(&stack, agent("crm", json!({ "requires": ["auth"] }))).await;
    lose("crm");
    let patched = call(
        &stack,
        Method::PATCH,
        "/v1/agents/crm",
        Some(json!({ "timeout_ms": 1500 })),
        Some("\"1\""),
    )
    .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(
        patched.etag.as_deref(),
        Some("\"2\""),
        "one change, one version"
    );
    lose("crm");
    let deleted = call(&stack, Method::DELETE, "/v1/agents/crm", None, None).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    assert_eq!(
        stack.faults().expect("the fault proxy").pending_rules(),
        0,
        "every lost response happened"
    );
    assert_eq!(get(&stack, "/v1/agents/crm").await.status, 404);
    let auth = get(&stack, "/v1/agents/auth").await;
    assert_eq!(auth.body["version"], 1);
}
