//! Attacks on tenant safety, on the local stack: tenant B ("mallory") tries every item of the
//! tenant-safety issue against tenant A ("acme") with real HTTP requests, real agents and the
//! real AWS SDK against the emulator. Each test asserts the refusal, or that B's answer is
//! exactly the one an id that exists nowhere gets.
//!
//! Sections, one per item of the issue:
//! 1. credentials: secret and parameter references, old registrations, `/v1/secrets`;
//! 2. targets: Lambda functions, Bedrock models and tokens, loopback in a deployment;
//! 3. nothing tells B that A exists: every verb on A's ids, stats, 503s, stored failures, the
//!    classifier's idempotency key;
//! 4. quotas: the operator's API, agents, running workflows, pace and backlog, urgent share,
//!    header mode;
//! 5. shared functions: a fan-in whose dependencies' outputs exceed what a call carries.
//!
//! Secrets Manager and SSM are shared by every stack of this binary (one emulator), so every
//! secret a test writes has a name of its own ([`unique`]).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use baton_local::agents::AgentReply;
use baton_local::bedrock_service::{BRIEF_MODEL, KEYWORDS_MODEL};
use baton_local::lambda_service::{function, SUMMARIZE};
use baton_local::openai_service;
use baton_local::stack::{LocalStack, StackOptions};
use baton_local::stand_ins::StandIns;
use baton_tests::*;
use baton_types::agent::AgentRegistration;
use baton_types::clock::parse_rfc3339;
use serde_json::{json, Value};
use tokio::sync::watch;

const ACME: &str = "acme";
const MALLORY: &str = "mallory";
/// The header that makes a caller the operator in header mode.
const OPERATOR: (&str, &str) = ("x-baton-scopes", "openid baton/operator");
const TEXT: &str = "Queues decouple the steps of a workflow. Each step runs when its inputs are \
                    ready. Failures are retried with backoff.";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// An answer with its headers and its text as sent.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

/// Any request: `tenant` in `X-Tenant-Id` (none: no header at all), extra headers, and a body
/// sent as given (so it may be malformed).
async fn send(
    stack: &LocalStack,
    method: &str,
    path: &str,
    tenant: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", stack.api_url));
    if let Some(tenant) = tenant {
        request = request.header("x-tenant-id", tenant);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("API answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is JSON: {text}"));
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// A request of `tenant` with a JSON body.
async fn call(
    stack: &LocalStack,
    tenant: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let body = body.map(Value::to_string);
    send(stack, method, path, Some(tenant), &[], body.as_deref()).await
}

/// A request of the operator (who authenticates as a tenant of its own, with its scope).
async fn operator(stack: &LocalStack, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let body = body.map(Value::to_string);
    send(
        stack,
        method,
        path,
        Some("ops"),
        &[OPERATOR],
        body.as_deref(),
    )
    .await
}

fn expect(reply: Reply, status: u16, what: &str) -> Value {
    assert_eq!(reply.status, status, "{what}: {:#}", reply.body);
    reply.body
}

/// Asserts an error answer's status and code, and that it has the error shape.
fn assert_error(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(reply.status, status, "{what}: {:#}", reply.body);
    let error = &reply.body["error"];
    assert_eq!(error["code"], code, "{what}: {:#}", reply.body);
    assert!(!reply.message().is_empty(), "{what}: a message says why");
    assert!(error["details"].is_object(), "{what}: {:#}", reply.body);
}

/// Asserts a 400 naming `field`, whose message does not repeat `value`.
fn assert_field_refused(reply: &Reply, field: &str, value: &str, what: &str) {
    assert_error(reply, 400, "invalid_request", what);
    assert_eq!(
        reply.body["error"]["details"]["field"], field,
        "{what}: {:#}",
        reply.body
    );
    assert!(
        !reply.text.contains(value),
        "{what}: the refusal repeats the value: {}",
        reply.text
    );
}

/// A name no other test of this binary uses (Secrets Manager is shared by all its stacks).
fn unique(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn stand_ins(stack: &LocalStack) -> &StandIns {
    stack.stand_ins().expect("the stack runs the stand-ins")
}

/// A stack whose handlers do not run: only the API, with the stand-ins' keys stored.
fn no_handlers(options: &mut StackOptions) {
    options.run_route = false;
    options.run_execute = false;
    options.run_learn = false;
}

/// A quick retry policy, so a retryable failure does not wait for the built-in backoff.
fn quick_retry() -> Value {
    json!({ "max_attempts": 2, "backoff": "fixed", "base_ms": 50, "jitter": "none" })
}

/// Registers an agent for `tenant` (201 expected).
async fn register_as(stack: &LocalStack, tenant: &str, body: Value) {
    let reply = call(stack, tenant, "POST", "/v1/agents", Some(&body)).await;
    assert_eq!(
        reply.status, 201,
        "{tenant} registers {body}: {:#}",
        reply.body
    );
}

/// Registers an http agent at `url` for `tenant`.
async fn register_url_as(stack: &LocalStack, tenant: &str, name: &str, url: &str, caps: &[&str]) {
    let body = json!({ "name": name, "endpoint": url, "capabilities": caps, "timeout_ms": 5000 });
    register_as(stack, tenant, body).await;
}

/// Writes an agent straight into the registry for `tenant`, as a registration stored before
/// the rules existed would be: only its shape is checked, not what it references.
async fn old_registration(stack: &LocalStack, tenant: &str, body: Value) {
    let registration: AgentRegistration =
        serde_json::from_value(body.clone()).expect("a registration");
    stack
        .put_agent(tenant, registration)
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"));
}

fn one_task(capability: &str, input: Value) -> Value {
    json!({ "name": "one", "tasks": [{ "id": "t", "capability": capability, "input": input }] })
}

/// Submits as `tenant` (202 expected) and returns the answer.
async fn submit_as(stack: &LocalStack, tenant: &str, workflow: &Value) -> Value {
    expect(
        call(stack, tenant, "POST", "/v1/workflows", Some(workflow)).await,
        202,
        &format!("{tenant} submits"),
    )
}

fn id_of(accepted: &Value) -> String {
    accepted["workflow_id"]
        .as_str()
        .expect("workflow_id")
        .to_string()
}

/// Polls `tenant`'s view of a workflow until it leaves `running`.
async fn finished_as(stack: &LocalStack, tenant: &str, id: &str) -> Value {
    let path = format!("/v1/workflows/{id}");
    eventually(&format!("{tenant}'s workflow {id} finishes"), || async {
        let view = call(stack, tenant, "GET", &path, None).await;
        if view.status == 503 {
            return None;
        }
        assert_eq!(view.status, 200, "{:#}", view.body);
        assert_consistent(&view.body);
        (!is_unfinished(&view.body)).then_some(view.body)
    })
    .await
}

/// Whether any item of the stack's tables holds `needle`.
async fn stored_anywhere(stack: &LocalStack, needle: &str) -> bool {
    for table in [&stack.settings.state_table, &stack.settings.memory_table] {
        for item in table_items(stack, table).await {
            if format!("{item:?}").contains(needle) {
                return true;
            }
        }
    }
    false
}

/// An agent that holds every call until the test releases it: a task stays running exactly
/// as long as the test needs, whatever the machine's speed.
struct HeldAgent {
    url: String,
    calls: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

impl HeldAgent {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let counted = calls.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            let mut released = released.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = released.wait_for(|r| *r).await;
                axum::Json(json!({ "held": true }))
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HeldAgent {
            url,
            calls,
            release,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn called(&self) {
        eventually("the held agent is called", || async {
            (self.calls() > 0).then_some(())
        })
        .await;
    }

    fn release(&self) {
        let _ = self.release.send(true);
    }
}

impl Drop for HeldAgent {
    fn drop(&mut self) {
        self.release();
    }
}

/// An API Gateway (HTTP API, payload v2) event as Lambda delivers it, for calling the
/// orchestrate handler directly.
fn gateway_event(
    method: &str,
    path: &str,
    tenant: Option<&str>,
    body: Option<&str>,
    request_id: &str,
) -> lambda_http::Request {
    let mut headers = serde_json::Map::new();
    headers.insert("content-type".into(), json!("application/json"));
    if let Some(tenant) = tenant {
        headers.insert("x-tenant-id".into(), json!(tenant));
    }
    let event = json!({
        "version": "2.0",
        "routeKey": "ANY /{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1",
                      "sourceIp": "203.0.113.7", "userAgent": "attacks" },
            "requestId": request_id,
            "routeKey": "ANY /{proxy+}",
            "stage": "$default",
            "time": "21/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795168800000i64
        },
        "pathParameters": { "proxy": path.trim_start_matches('/') },
        "body": body,
        "isBase64Encoded": false
    });
    let event: lambda_http::request::LambdaRequest =
        serde_json::from_value(event).expect("an API Gateway event");
    event.into()
}

/// What the handler answered: status, `x-request-id` and the body's text.
async fn handle(
    api: &baton_orchestrate::Api<baton_local::stack::Store, baton_local::stack::Queues>,
    request: lambda_http::Request,
) -> (u16, Option<String>, String) {
    let response = baton_orchestrate::handle_request(api, request)
        .await
        .expect("the handler answers");
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = String::from_utf8_lossy(response.body().as_ref()).to_string();
    (response.status().as_u16(), request_id, text)
}

// ---------------------------------------------------------------------------------------
// 1. Credentials
// ---------------------------------------------------------------------------------------

fn openai_body(name: &str, capability: &str, base_url: &str, api_key: &str) -> Value {
    json!({ "name": name, "kind": "openai", "base_url": base_url,
            "model": openai_service::BRIEF_MODEL, "api_key": api_key,
            "capabilities": [capability], "timeout_ms": 5000, "retry": quick_retry() })
}

/// The Secrets Manager name of an ARN (without the six-character suffix).
fn secret_name_of_arn(arn: &str) -> String {
    let named = arn.split_once(":secret:").expect("a secret ARN").1;
    named[..named.len() - 7].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reference_another_tenants_secret_or_parameter_nor_paste_a_key() {
    let stack = start_stack("atk-keys", no_handlers).await;
    let keys = stand_ins(&stack);
    let base_url = format!("{}/v1", keys.openai.url());
    let refused: Vec<String> = vec![
        // The local stack's example key lives in tenant `default`'s namespace.
        keys.key_parameter.clone(),
        keys.key_secret_arn.clone(),
        secret_name_of_arn(&keys.key_secret_arn),
        format!(
            "arn:aws:ssm:us-east-1:123456789012:parameter{}",
            keys.key_parameter
        ),
        // Another tenant's, by name and by ARN.
        "baton/acme/openai".into(),
        "/baton/acme/openai".into(),
        "/baton/acme/team/openai".into(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:baton/acme/openai-AbCdEf".into(),
        "arn:aws:ssm:us-east-1:123456789012:parameter/baton/acme/openai".into(),
        // A tenant whose id begins like mallory's, or differs only in case, is another one.
        "/baton/mallory-evil/openai".into(),
        "baton/mallory.evil/openai".into(),
        "/baton/MALLORY/openai".into(),
        // Climbing out of the namespace.
        "/baton/mallory/../acme/openai".into(),
        "baton/mallory/../acme/openai".into(),
        "baton/mallory//openai".into(),
        // The operator's own, outside every tenant's namespace.
        "/baton/openai".into(),
        "baton/openai".into(),
        // Keys pasted instead of referenced.
        "sk-proj-Xq3v9T2bLmN8pR4sW6yZ1aC5dE7fG0hJ".into(),
        keys.openai.key().to_string(),
        "sk-ant-api03-abc def".into(),
    ];
    let before = state_keys(&stack).await;
    for (i, value) in refused.iter().enumerate() {
        let name = format!("thief-{i}");
        let body = openai_body(&name, "chat", &base_url, value);
        let reply = call(&stack, MALLORY, "POST", "/v1/agents", Some(&body)).await;
        assert_field_refused(&reply, "api_key", value, &format!("POST with {value}"));
        // The same through PUT, which creates an agent when none has the name.
        let path = format!("/v1/agents/{name}");
        let reply = call(&stack, MALLORY, "PUT", &path, Some(&body)).await;
        assert_field_refused(&reply, "api_key", value, &format!("PUT with {value}"));
    }
    // The namespace's root itself names no secret.
    for value in ["baton/mallory", "baton/mallory/", "/baton/mallory/"] {
        let body = openai_body("thief", "chat", &base_url, value);
        let reply = call(&stack, MALLORY, "POST", "/v1/agents", Some(&body)).await;
        assert_error(&reply, 400, "invalid_request", value);
        assert_eq!(
            reply.body["error"]["details"]["field"], "api_key",
            "{value}"
        );
    }
    assert_eq!(
        state_keys(&stack).await,
        before,
        "a refused agent stores nothing"
    );

    // Mallory's own namespace is allowed, by name and by ARN; a change of its key to
    // another tenant's is refused as a registration is, and the agent stays as it was.
    let own = [
        "/baton/mallory/openai",
        "baton/mallory/openai",
        "arn:aws:ssm:us-east-1:123456789012:parameter/baton/mallory/openai",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:baton/mallory/openai-AbCdEf",
    ];
    for (i, value) in own.iter().enumerate() {
        let body = openai_body(&format!("own-{i}"), "chat", &base_url, value);
        register_as(&stack, MALLORY, body).await;
    }
    let view = expect(
        call(&stack, MALLORY, "GET", "/v1/agents/own-0", None).await,
        200,
        "mallory reads its agent",
    );
    assert_eq!(view["api_key"], own[0]);
    let before = state_keys(&stack).await;
    for value in [keys.key_parameter.as_str(), "baton/acme/openai"] {
        let patch = json!({ "api_key": value });
        let reply = send(
            &stack,
            "PATCH",
            "/v1/agents/own-0",
            Some(MALLORY),
            &[("if-match", "\"1\"")],
            Some(&patch.to_string()),
        )
        .await;
        assert_field_refused(&reply, "api_key", value, &format!("PATCH to {value}"));
    }
    assert_eq!(state_keys(&stack).await, before);
    let after = expect(
        call(&stack, MALLORY, "GET", "/v1/agents/own-0", None).await,
        200,
        "mallory reads its agent again",
    );
    assert_eq!(after, view, "a refused change changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_registration_with_another_tenants_key_is_refused_at_call_time_and_never_shown() {
    let stack = start_stack("atk-old-keys", |s| s.run_learn = false).await;
    let keys = stand_ins(&stack);
    let base_url = format!("{}/v1", keys.openai.url());
    let pasted = keys.openai.key().to_string();
    // Three registrations stored before references were checked: default's parameter,
    // default's secret, and the working key itself pasted in.
    let old = [
        ("old-ssm", "chat-ssm", keys.key_parameter.clone()),
        ("old-secret", "chat-secret", keys.key_secret_arn.clone()),
        ("old-pasted", "chat-pasted", pasted.clone()),
    ];
    for (name, capability, key) in &old {
        old_registration(
            &stack,
            MALLORY,
            openai_body(name, capability, &base_url, key),
        )
        .await;
    }

    // The API never shows them back, one by one or listed.
    let listed = expect(
        call(&stack, MALLORY, "GET", "/v1/agents", None).await,
        200,
        "mallory lists its agents",
    );
    for (name, _, key) in &old {
        let view = call(&stack, MALLORY, "GET", &format!("/v1/agents/{name}"), None).await;
        assert_eq!(view.status, 200, "{:#}", view.body);
        assert_eq!(
            view.body["api_key"], "(hidden: not a secret reference of this tenant; set one)",
            "{name}"
        );
        assert!(!view.text.contains(key.as_str()), "{name}: {}", view.text);
        assert!(!listed.to_string().contains(key.as_str()), "{listed:#}");
        let shown = listed["agents"]
            .as_array()
            .and_then(|agents| agents.iter().find(|a| a["name"] == *name))
            .expect("listed");
        assert_eq!(shown["api_key"], view.body["api_key"]);
    }

    // Each call is refused before the key is read, and the server never hears of it.
    let workflow = json!({ "name": "old keys", "tasks": old.iter().map(|(_, capability, _)| {
        json!({ "id": capability, "capability": capability, "input": { "prompt": TEXT } })
    }).collect::<Vec<_>>() });
    let id = id_of(&submit_as(&stack, MALLORY, &workflow).await);
    let finished = finished_as(&stack, MALLORY, &id).await;
    assert_eq!(finished["status"], "failed", "{finished:#}");
    for (name, capability, key) in &old {
        let error = &task(&finished, capability)["error"];
        assert_eq!(error["kind"], "forbidden_reference", "{name}: {error:#}");
        assert_eq!(error["retryable"], false, "{name}: {error:#}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(!message.contains(key.as_str()), "{name}: {message}");
        assert_eq!(
            task(&finished, capability)["attempts"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "{name}: not retried"
        );
    }
    assert!(!finished.to_string().contains(&pasted));
    assert_eq!(
        keys.openai.calls(),
        Vec::<Value>::new(),
        "the server got no call, so never default's key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_are_write_only_and_never_come_back() {
    let stack = api_only_stack("atk-secret-values").await;
    let name = unique("openai");
    let path = format!("/v1/secrets/{name}");
    let first = format!("sk-acme-first-{}", unique("v"));
    let second = format!("sk-acme-second-{}", unique("v"));
    let mut answers: Vec<String> = Vec::new();

    let created = send(
        &stack,
        "PUT",
        &path,
        Some(ACME),
        &[],
        Some(&json!({ "value": first }).to_string()),
    )
    .await;
    answers.push(created.text.clone());
    assert_eq!(created.status, 201, "{:#}", created.body);
    assert_eq!(created.body["name"], name.as_str());
    assert_eq!(
        created.body["reference"],
        format!("baton/acme/{name}").as_str()
    );
    assert!(created.body["created_at"].is_string(), "{:#}", created.body);
    assert!(created.body["updated_at"].is_string(), "{:#}", created.body);
    assert_eq!(created.header("location"), Some(path.as_str()));

    let updated = call(
        &stack,
        ACME,
        "PUT",
        &path,
        Some(&json!({ "value": second })),
    )
    .await;
    answers.push(updated.text.clone());
    assert_eq!(updated.status, 200, "{:#}", updated.body);
    assert_eq!(updated.body["reference"], created.body["reference"]);
    assert!(
        updated.body.get("created_at").is_none(),
        "{:#}",
        updated.body
    );

    let shown = call(&stack, ACME, "GET", &path, None).await;
    answers.push(shown.text.clone());
    assert_eq!(shown.status, 200, "{:#}", shown.body);
    assert_eq!(shown.body["name"], name.as_str());
    assert_eq!(shown.body["reference"], created.body["reference"]);
    let listed = call(&stack, ACME, "GET", "/v1/secrets", None).await;
    answers.push(listed.text.clone());
    assert_eq!(listed.status, 200, "{:#}", listed.body);
    assert!(
        listed.body["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .any(|s| s["name"] == name.as_str()),
        "{:#}",
        listed.body
    );

    // Malformed bodies are refused without quoting what was sent, and write nothing.
    let leaked = "sk-secret-123";
    let too_long = json!({ "value": format!("{leaked}{}", "x".repeat(65_536)) }).to_string();
    let malformed = [
        format!("\"{leaked}\""),
        format!("[\"{leaked}\"]"),
        leaked.to_string(),
        format!("{{\"value\": \"{leaked}\""),
        format!("{{\"value\": \"{leaked}\", }}"),
        format!("{{\"secret\": \"{leaked}\"}}"),
        format!("{{\"value\": \"{leaked}\", \"note\": \"{leaked}\"}}"),
        format!("{{\"value\": [\"{leaked}\"]}}"),
        "{\"value\": 12345}".to_string(),
        "{\"value\": \"\"}".to_string(),
        "{}".to_string(),
        too_long,
    ];
    let fresh = unique("never-written");
    for body in &malformed {
        for target in [&name, &fresh] {
            let reply = send(
                &stack,
                "PUT",
                &format!("/v1/secrets/{target}"),
                Some(ACME),
                &[],
                Some(body),
            )
            .await;
            let shown: String = body.chars().take(60).collect();
            assert_eq!(reply.status, 400, "{shown}: {:#}", reply.body);
            assert!(
                ["invalid_request", "invalid_json"]
                    .contains(&reply.body["error"]["code"].as_str().unwrap_or("")),
                "{shown}: {:#}",
                reply.body
            );
            assert!(!reply.text.contains(leaked), "{shown}: {}", reply.text);
            answers.push(reply.text);
        }
    }
    let empty = send(&stack, "PUT", &path, Some(ACME), &[], Some("  ")).await;
    assert_eq!(empty.status, 400, "{:#}", empty.body);
    let unchanged = call(&stack, ACME, "GET", &path, None).await;
    assert_eq!(
        unchanged.body, shown.body,
        "a refused write changes nothing"
    );
    let never = call(&stack, ACME, "GET", &format!("/v1/secrets/{fresh}"), None).await;
    assert_error(&never, 404, "not_found", "a refused write creates nothing");

    // While an agent references it, it cannot be deleted; the refusal names the agent.
    let reference = created.body["reference"].as_str().unwrap().to_string();
    let agent = openai_body("uses-it", "chat", "http://127.0.0.1:9/v1", &reference);
    register_as(&stack, ACME, agent).await;
    let view = call(&stack, ACME, "GET", "/v1/agents/uses-it", None).await;
    answers.push(view.text.clone());
    assert_eq!(view.body["api_key"], reference.as_str());
    let in_use = call(&stack, ACME, "DELETE", &path, None).await;
    answers.push(in_use.text.clone());
    assert_error(&in_use, 409, "secret_in_use", "delete while used");
    assert_eq!(
        in_use.body["error"]["details"]["agents"],
        json!(["uses-it"])
    );
    let agents = call(&stack, ACME, "GET", "/v1/agents", None).await;
    answers.push(agents.text.clone());

    // Neither value is in any answer, nor in any item of the tables.
    for value in [&first, &second] {
        for answer in &answers {
            assert!(
                !answer.contains(value.as_str()),
                "an answer shows the value: {answer}"
            );
        }
        assert!(
            !stored_anywhere(&stack, value).await,
            "an item holds the value"
        );
    }

    expect(
        call(&stack, ACME, "DELETE", "/v1/agents/uses-it", None).await,
        200,
        "the agent is deleted",
    );
    let deleted = call(&stack, ACME, "DELETE", &path, None).await;
    assert_eq!(deleted.status, 200, "{:#}", deleted.body);
    assert_eq!(
        deleted.body,
        json!({ "name": name, "status": "deleted" }),
        "{:#}",
        deleted.body
    );
    assert_error(
        &call(&stack, ACME, "GET", &path, None).await,
        404,
        "not_found",
        "gone",
    );
    assert_error(
        &call(&stack, ACME, "DELETE", &path, None).await,
        404,
        "not_found",
        "gone twice",
    );
}

/// A key sent as a field's name, by mistake (`{"sk-…": …}`, or beside `value`), is part of a
/// malformed body like any other: the refusal must not quote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_secret_body_does_not_quote_a_key_sent_as_a_field_name() {
    let stack = api_only_stack("atk-secret-field").await;
    let key = "sk-proj-Xq3v9T2bLmN8pR4sW6yZ1aC5dE7fG0hJ";
    let path = format!("/v1/secrets/{}", unique("openai"));
    for body in [
        json!({ key: "" }),
        json!({ key: null }),
        json!({ "value": "x", key: true }),
    ] {
        let reply = send(
            &stack,
            "PUT",
            &path,
            Some(MALLORY),
            &[],
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(reply.status, 400, "{:#}", reply.body);
        let shown: String = key.chars().take(12).collect();
        assert!(
            !reply.text.contains(&shown),
            "the refusal quotes the key sent as a field name: {}",
            reply.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_read_delete_or_overwrite_another_tenants_secret() {
    let stack = start_stack("atk-secret-owner", |s| s.run_learn = false).await;
    let keys = stand_ins(&stack);
    let base_url = format!("{}/v1", keys.openai.url());
    let name = unique("shared");
    let ghost = unique("ghost");
    let put = json!({ "value": keys.openai.key() });
    let created = expect(
        call(
            &stack,
            ACME,
            "PUT",
            &format!("/v1/secrets/{name}"),
            Some(&put),
        )
        .await,
        201,
        "acme keeps its key",
    );
    let reference = created["reference"].as_str().unwrap().to_string();
    assert_eq!(reference, format!("baton/acme/{name}"));
    register_as(
        &stack,
        ACME,
        openai_body("acme-chat", "chat", &base_url, &reference),
    )
    .await;
    let acme_view = expect(
        call(&stack, ACME, "GET", &format!("/v1/secrets/{name}"), None).await,
        200,
        "acme reads its secret",
    );

    // Mallory's read and delete of acme's name answer as for a name that exists nowhere.
    for method in ["GET", "DELETE"] {
        let theirs = call(
            &stack,
            MALLORY,
            method,
            &format!("/v1/secrets/{name}"),
            None,
        )
        .await;
        let nowhere = call(
            &stack,
            MALLORY,
            method,
            &format!("/v1/secrets/{ghost}"),
            None,
        )
        .await;
        assert_error(&theirs, 404, "not_found", method);
        assert_eq!(
            (theirs.status, theirs.text.replace(&name, "{name}")),
            (nowhere.status, nowhere.text.replace(&ghost, "{name}")),
            "{method}: acme's secret must answer as one that exists nowhere"
        );
    }
    let listed = expect(
        call(&stack, MALLORY, "GET", "/v1/secrets", None).await,
        200,
        "mallory lists its secrets",
    );
    assert!(
        !listed.to_string().contains(keys.openai.key()),
        "{listed:#}"
    );
    for secret in listed["secrets"].as_array().expect("secrets") {
        let shown = secret["reference"].as_str().unwrap_or_default();
        assert!(shown.starts_with("baton/mallory/"), "{listed:#}");
        assert_ne!(secret["name"], name.as_str(), "{listed:#}");
    }
    // Nor can mallory point an agent at it.
    let thief = openai_body("thief", "chat", &base_url, &reference);
    let refused = call(&stack, MALLORY, "POST", "/v1/agents", Some(&thief)).await;
    assert_field_refused(&refused, "api_key", &reference, "acme's reference");

    // Mallory's PUT of the same name makes its own; acme's is untouched and keeps working.
    let wrong = "sk-mallory-wrong-key";
    let own = expect(
        call(
            &stack,
            MALLORY,
            "PUT",
            &format!("/v1/secrets/{name}"),
            Some(&json!({ "value": wrong })),
        )
        .await,
        201,
        "mallory keeps its own under the same name",
    );
    assert_eq!(own["reference"], format!("baton/mallory/{name}").as_str());
    let acme_after = expect(
        call(&stack, ACME, "GET", &format!("/v1/secrets/{name}"), None).await,
        200,
        "acme reads its secret again",
    );
    assert_eq!(acme_after, acme_view, "acme's secret is untouched");
    let id = id_of(&submit_as(&stack, ACME, &one_task("chat", json!({ "prompt": TEXT }))).await);
    let finished = finished_as(&stack, ACME, &id).await;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    let calls = keys.openai.calls();
    assert!(!calls.is_empty());
    for seen in &calls {
        assert_eq!(
            seen["authorization"],
            format!("Bearer {}", keys.openai.key()),
            "acme's key, never mallory's"
        );
    }
    // Mallory deleting its own leaves acme's.
    expect(
        call(
            &stack,
            MALLORY,
            "DELETE",
            &format!("/v1/secrets/{name}"),
            None,
        )
        .await,
        200,
        "mallory deletes its own",
    );
    expect(
        call(&stack, ACME, "GET", &format!("/v1/secrets/{name}"), None).await,
        200,
        "acme's is still there",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_a_tenant_put_is_the_key_its_agent_calls_with() {
    let stack = start_stack("atk-secret-works", |s| s.run_learn = false).await;
    let keys = stand_ins(&stack);
    let key = keys.openai.key().to_string();
    let name = unique("openai");
    let created = expect(
        call(
            &stack,
            MALLORY,
            "PUT",
            &format!("/v1/secrets/{name}"),
            Some(&json!({ "value": key })),
        )
        .await,
        201,
        "mallory keeps its key",
    );
    let reference = created["reference"].as_str().unwrap().to_string();
    assert_eq!(reference, format!("baton/mallory/{name}"));
    let base_url = format!("{}/v1", keys.openai.url());
    register_as(
        &stack,
        MALLORY,
        openai_body("chat", "chat", &base_url, &reference),
    )
    .await;
    let id = id_of(
        &submit_as(
            &stack,
            MALLORY,
            &one_task("chat", json!({ "prompt": TEXT })),
        )
        .await,
    );
    let finished = finished_as(&stack, MALLORY, &id).await;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    assert_eq!(
        task(&finished, "t")["output"]["content"],
        "Queues decouple the steps of a workflow."
    );
    let calls = keys.openai.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0]["authorization"], format!("Bearer {key}"));
    let view = call(&stack, MALLORY, "GET", "/v1/agents/chat", None).await;
    assert_eq!(view.body["api_key"], reference.as_str());
    assert!(!view.text.contains(&key));
    assert!(!finished.to_string().contains(&key));
}

// ---------------------------------------------------------------------------------------
// 2. Targets
// ---------------------------------------------------------------------------------------

fn lambda_body(name: &str, capability: &str, function: &str) -> Value {
    json!({ "name": name, "kind": "lambda", "function": function,
            "capabilities": [capability], "timeout_ms": 5000, "retry": quick_retry() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_register_another_tenants_lambda_function() {
    let stack = api_only_stack("atk-functions").await;
    let acme = function(ACME, SUMMARIZE);
    let refused: Vec<(&str, String)> = vec![
        (MALLORY, acme.clone()),
        (MALLORY, function("default", SUMMARIZE)),
        (MALLORY, format!("{acme}:live")),
        (MALLORY, format!("123456789012:function:{acme}")),
        (
            MALLORY,
            format!("arn:aws:lambda:us-east-1:123456789012:function:{acme}"),
        ),
        (
            MALLORY,
            format!("arn:aws:lambda:us-east-1:123456789012:function:{acme}:$LATEST"),
        ),
        // A name of mallory's shape in front, acme's function where Lambda reads the name.
        (
            MALLORY,
            format!("{}:function:{acme}", function(MALLORY, "x")),
        ),
        // Functions outside every tenant's namespace.
        (MALLORY, "summarize".into()),
        (MALLORY, "baton-agent-summarize".into()),
        (MALLORY, "other-prefix-mallory-summarize".into()),
        // A tenant whose id is a prefix of another's cannot claim its functions.
        (ACME, function("acme-x", SUMMARIZE)),
        (MALLORY, function("mallory-evil", SUMMARIZE)),
        (MALLORY, function("MALLORY", SUMMARIZE)),
    ];
    let before = state_keys(&stack).await;
    for (i, (tenant, target)) in refused.iter().enumerate() {
        let body = lambda_body(&format!("thief-{i}"), "summarize", target);
        let reply = call(&stack, tenant, "POST", "/v1/agents", Some(&body)).await;
        assert_field_refused(&reply, "function", target, &format!("{tenant}: {target}"));
    }
    // Names of the tenant's shape without a name part, or with a `-` in it.
    for target in [
        "baton-agent-mallory",
        "baton-agent-mallory-",
        "baton-agent-mallory-a-b",
    ] {
        let body = lambda_body("thief", "summarize", target);
        let reply = call(&stack, MALLORY, "POST", "/v1/agents", Some(&body)).await;
        assert_error(&reply, 400, "invalid_request", target);
        assert_eq!(
            reply.body["error"]["details"]["field"], "function",
            "{target}"
        );
    }
    assert_eq!(
        state_keys(&stack).await,
        before,
        "a refused agent stores nothing"
    );

    // Its own functions, by name, ARN or with a qualifier, are allowed.
    let own = function(MALLORY, SUMMARIZE);
    for (i, target) in [
        own.clone(),
        format!("{own}:live"),
        format!("arn:aws:lambda:us-east-1:123456789012:function:{own}:3"),
    ]
    .iter()
    .enumerate()
    {
        register_as(
            &stack,
            MALLORY,
            lambda_body(&format!("own-{i}"), "summarize", target),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_registration_naming_another_tenants_function_is_refused_at_call_time() {
    let stack = start_stack("atk-old-functions", |s| s.run_learn = false).await;
    let lambda = &stand_ins(&stack).lambda;
    let acme = function(ACME, SUMMARIZE);
    let arn = format!(
        "arn:aws:lambda:us-east-1:123456789012:function:{}",
        function("default", SUMMARIZE)
    );
    old_registration(&stack, MALLORY, lambda_body("old-name", "by-name", &acme)).await;
    old_registration(&stack, MALLORY, lambda_body("old-arn", "by-arn", &arn)).await;
    let workflow = json!({ "name": "old functions", "tasks": [
        { "id": "by-name", "capability": "by-name", "input": { "text": TEXT } },
        { "id": "by-arn", "capability": "by-arn", "input": { "text": TEXT } },
    ]});
    let id = id_of(&submit_as(&stack, MALLORY, &workflow).await);
    let finished = finished_as(&stack, MALLORY, &id).await;
    assert_eq!(finished["status"], "failed", "{finished:#}");
    for (task_id, target) in [("by-name", &acme), ("by-arn", &arn)] {
        let error = &task(&finished, task_id)["error"];
        assert_eq!(error["kind"], "forbidden_reference", "{error:#}");
        assert_eq!(error["retryable"], false, "{error:#}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(!message.contains(target.as_str()), "{message}");
    }

    // A classifier is an agent call too: an old one naming acme's function is refused, and
    // the turn is decided by the rules instead.
    old_registration(
        &stack,
        MALLORY,
        lambda_body("old-classifier", "classify", &acme),
    )
    .await;
    let core = agent_replying(AgentReply::ok(json!({ "response": "mallory's core" }))).await;
    register_as(
        &stack,
        MALLORY,
        json!({ "name": "core", "endpoint": core.url, "capabilities": ["conversation.core"],
                "timeout_ms": 5000, "conversation": { "role": "core" } }),
    )
    .await;
    let session = expect(
        call(&stack, MALLORY, "POST", "/v1/sessions", Some(&json!({}))).await,
        201,
        "mallory opens a session",
    )["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let turn = expect(
        call(
            &stack,
            MALLORY,
            "POST",
            &format!("/v1/sessions/{session}/messages"),
            Some(&json!({ "text": "hello" })),
        )
        .await,
        200,
        "mallory's turn",
    );
    assert_eq!(turn["response"], "mallory's core", "{turn:#}");
    assert_eq!(turn["analysis"]["classifier"], "old-classifier", "{turn:#}");
    let why = turn["analysis"]["classifier_error"]
        .as_str()
        .unwrap_or_default();
    assert!(!why.is_empty(), "{turn:#}");
    assert!(!why.contains(&acme), "{why}");

    assert_eq!(
        lambda.calls(),
        Vec::<Value>::new(),
        "the Lambda service got no call at all"
    );
}

fn bedrock_body(name: &str, capability: &str, model: &str, inference: Option<Value>) -> Value {
    let mut body = json!({ "name": name, "kind": "bedrock", "model_id": model,
                           "capabilities": [capability], "timeout_ms": 5000, "retry": quick_retry() });
    if let Some(inference) = inference {
        body["inference"] = inference;
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_models_come_from_the_operators_allow_list_and_output_tokens_are_capped() {
    let stack = start_stack("atk-bedrock", |s| s.run_learn = false).await;
    let bedrock = &stand_ins(&stack).bedrock;
    let before = state_keys(&stack).await;
    let refused = [
        (
            bedrock_body(
                "m1",
                "brief",
                "anthropic.claude-3-5-sonnet-20240620-v1:0",
                None,
            ),
            "model_id",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        ),
        (
            bedrock_body("m2", "brief", "baton.brief-v2", None),
            "model_id",
            "baton.brief-v2",
        ),
        (
            bedrock_body(
                "m3",
                "brief",
                BRIEF_MODEL,
                Some(json!({ "max_tokens": 5000 })),
            ),
            "inference.max_tokens",
            "5000",
        ),
        (
            bedrock_body(
                "m4",
                "brief",
                KEYWORDS_MODEL,
                Some(json!({ "max_tokens": 4097 })),
            ),
            "inference.max_tokens",
            "4097",
        ),
    ];
    for (body, field, value) in &refused {
        let reply = call(&stack, MALLORY, "POST", "/v1/agents", Some(body)).await;
        assert_field_refused(&reply, field, value, &body.to_string());
    }
    assert_eq!(
        state_keys(&stack).await,
        before,
        "a refused agent stores nothing"
    );

    // At the cap is allowed; raising it past the cap is refused as a registration is.
    register_as(
        &stack,
        MALLORY,
        bedrock_body(
            "at-cap",
            "at-cap",
            BRIEF_MODEL,
            Some(json!({ "max_tokens": 4096 })),
        ),
    )
    .await;
    let patch = json!({ "inference": { "max_tokens": 5000 } });
    let raised = send(
        &stack,
        "PATCH",
        "/v1/agents/at-cap",
        Some(MALLORY),
        &[("if-match", "\"1\"")],
        Some(&patch.to_string()),
    )
    .await;
    assert_error(&raised, 400, "invalid_request", "raised past the cap");
    assert_eq!(
        raised.body["error"]["details"]["field"],
        "inference.max_tokens"
    );

    // A call that leaves max_tokens open asks for the cap, never more.
    register_as(
        &stack,
        MALLORY,
        bedrock_body("open", "open", BRIEF_MODEL, None),
    )
    .await;
    // Old registrations past the rules are refused at call time, and never reach Bedrock.
    old_registration(
        &stack,
        MALLORY,
        bedrock_body("old-model", "old-model", "baton.none-v1", None),
    )
    .await;
    old_registration(
        &stack,
        MALLORY,
        bedrock_body(
            "old-tokens",
            "old-tokens",
            BRIEF_MODEL,
            Some(json!({ "max_tokens": 100000 })),
        ),
    )
    .await;
    let workflow = json!({ "name": "bedrock", "tasks": [
        { "id": "open", "capability": "open", "input": { "text": TEXT } },
        { "id": "old-model", "capability": "old-model", "input": { "text": TEXT } },
        { "id": "old-tokens", "capability": "old-tokens", "input": { "text": TEXT } },
    ]});
    let id = id_of(&submit_as(&stack, MALLORY, &workflow).await);
    let finished = finished_as(&stack, MALLORY, &id).await;
    assert_eq!(
        task(&finished, "open")["status"],
        "succeeded",
        "{finished:#}"
    );
    for refused in ["old-model", "old-tokens"] {
        let error = &task(&finished, refused)["error"];
        assert_eq!(error["kind"], "forbidden_reference", "{refused}: {error:#}");
        assert_eq!(error["retryable"], false, "{refused}: {error:#}");
    }
    let calls = bedrock.calls();
    assert_eq!(
        calls.len(),
        1,
        "only the allowed call reached Bedrock: {calls:#?}"
    );
    assert_eq!(calls[0]["model_id"], BRIEF_MODEL);
    assert_eq!(calls[0]["request"]["inferenceConfig"]["maxTokens"], 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_agents_are_refused_in_a_deployment_whatever_the_private_networks_say() {
    let stack = api_only_stack("atk-loopback").await;
    let before = state_keys(&stack).await;
    let endpoints = [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://[::1]:9/",
        "https://127.0.0.1:9/",
        "https://127.0.0.2:9/",
        "https://localhost:9/",
        "https://[::ffff:127.0.0.1]:9/",
    ];
    for networks in ["127.0.0.0/8,::1/128", "0.0.0.0/0,::/0"] {
        // The deployment's settings: what the environment can say, and no loopback.
        let mut settings = stack.settings.clone();
        settings.endpoint_policy.allow_loopback = false;
        settings.endpoint_policy.private_networks =
            baton_types::endpoint::parse_private_networks(networks).expect("networks");
        let api = baton_orchestrate::Api::new(
            stack.clients.store(&settings),
            stack.clients.queues(&settings),
            settings,
        );
        for url in endpoints {
            let body = json!({ "name": "inside", "endpoint": url, "capabilities": ["c"] });
            let request = gateway_event(
                "POST",
                "/v1/agents",
                Some(MALLORY),
                Some(&body.to_string()),
                "loopback-probe",
            );
            let (status, _, text) = handle(&api, request).await;
            let answer: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(status, 400, "{networks} {url}: {answer:#}");
            assert_eq!(
                answer["error"]["details"]["field"], "endpoint",
                "{url}: {answer:#}"
            );
        }
        let body = json!({ "name": "inside", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                           "model": "m", "capabilities": ["c"] });
        let request = gateway_event(
            "POST",
            "/v1/agents",
            Some(MALLORY),
            Some(&body.to_string()),
            "loopback-probe",
        );
        let (status, _, text) = handle(&api, request).await;
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(status, 400, "{networks} base_url: {answer:#}");
        assert_eq!(
            answer["error"]["details"]["field"], "base_url",
            "{answer:#}"
        );
    }
    assert_eq!(
        state_keys(&stack).await,
        before,
        "a refused agent stores nothing"
    );
    // The local stack alone allows loopback: the same registration is taken there.
    let body =
        json!({ "name": "inside", "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] });
    register_as(&stack, MALLORY, body).await;
}

// ---------------------------------------------------------------------------------------
// 3. Nothing tells B that A exists
// ---------------------------------------------------------------------------------------

/// The ids of A's things, or of things that exist nowhere.
struct Ids {
    agent: String,
    workflow: String,
    session: String,
    secret: String,
    tenant: String,
}

impl Ids {
    fn fill(&self, template: &str) -> String {
        template
            .replace("{agent}", &self.agent)
            .replace("{workflow}", &self.workflow)
            .replace("{session}", &self.session)
            .replace("{secret}", &self.secret)
            .replace("{tenant}", &self.tenant)
    }

    /// `value` with the ids replaced by placeholders, without the times (which differ
    /// from one request to the next).
    fn normalize(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(
                text.replace(&self.workflow, "{workflow}")
                    .replace(&self.session, "{session}")
                    .replace(&self.secret, "{secret}")
                    .replace(&self.agent, "{agent}")
                    .replace(&self.tenant, "{tenant}"),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.normalize(v)).collect()),
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .filter(|(k, _)| !k.ends_with("_at") && !k.ends_with("_ms"))
                    .map(|(k, v)| (k.clone(), self.normalize(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// One request of mallory's on an id: method, path, body and headers, with placeholders.
type Probe = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
);

const IF_1: &[(&str, &str)] = &[("if-match", "\"1\"")];
const IF_ANY: &[(&str, &str)] = &[("if-match", "*")];
const NONE: &[(&str, &str)] = &[];
const AGENT_BODY: &str =
    r#"{"name":"{agent}","endpoint":"http://127.0.0.1:9/b","capabilities":["probe"]}"#;

/// Every verb on an id of A's. The creations come last: they make mallory's own things under
/// the names they are given, which earlier probes would find.
const PROBES: &[Probe] = &[
    ("GET", "/v1/agents/{agent}", None, NONE),
    (
        "PATCH",
        "/v1/agents/{agent}",
        Some(r#"{"timeout_ms":1000}"#),
        NONE,
    ),
    (
        "PATCH",
        "/v1/agents/{agent}",
        Some(r#"{"timeout_ms":1000}"#),
        IF_1,
    ),
    (
        "PATCH",
        "/v1/agents/{agent}",
        Some(r#"{"enabled":false}"#),
        IF_ANY,
    ),
    ("PUT", "/v1/agents/{agent}", Some(AGENT_BODY), IF_1),
    ("PUT", "/v1/agents/{agent}", Some(AGENT_BODY), IF_ANY),
    ("POST", "/v1/agents/{agent}/enable", None, NONE),
    ("POST", "/v1/agents/{agent}/enable", None, IF_1),
    ("POST", "/v1/agents/{agent}/disable", None, NONE),
    ("POST", "/v1/agents/{agent}/disable", None, IF_ANY),
    ("DELETE", "/v1/agents/{agent}", None, IF_1),
    ("DELETE", "/v1/agents/{agent}", None, IF_ANY),
    ("DELETE", "/v1/agents/{agent}", None, NONE),
    ("GET", "/v1/workflows/{workflow}", None, NONE),
    ("GET", "/v1/workflows/{workflow}/plan", None, NONE),
    ("GET", "/v1/workflows/{workflow}/history", None, NONE),
    ("GET", "/v1/workflows/{workflow}/graph", None, NONE),
    ("GET", "/v1/workflows/{workflow}/tasks/work", None, NONE),
    ("POST", "/v1/workflows/{workflow}/cancel", None, NONE),
    (
        "POST",
        "/v1/workflows/{workflow}/cancel?force=true",
        None,
        NONE,
    ),
    ("POST", "/v1/workflows/{workflow}/pause", None, NONE),
    ("POST", "/v1/workflows/{workflow}/resume", None, NONE),
    ("POST", "/v1/workflows/{workflow}/retry", None, NONE),
    ("GET", "/v1/sessions/{session}", None, NONE),
    ("GET", "/v1/sessions/{session}/turns/1", None, NONE),
    (
        "POST",
        "/v1/sessions/{session}/messages",
        Some(r#"{"text":"hi"}"#),
        NONE,
    ),
    ("POST", "/v1/sessions/{session}/resume", None, NONE),
    (
        "POST",
        "/v1/sessions/{session}/resume",
        Some(r#"{"reply":"go on"}"#),
        NONE,
    ),
    ("DELETE", "/v1/sessions/{session}", None, NONE),
    ("GET", "/v1/secrets/{secret}", None, NONE),
    ("DELETE", "/v1/secrets/{secret}", None, NONE),
    ("GET", "/v1/tenants/{tenant}/quotas", None, NONE),
    (
        "PUT",
        "/v1/tenants/{tenant}/quotas",
        Some(r#"{"agents":5}"#),
        NONE,
    ),
    // Creations under A's names: mallory's own, never a conflict with A's.
    ("PUT", "/v1/agents/{agent}", Some(AGENT_BODY), NONE),
    (
        "PUT",
        "/v1/secrets/{secret}",
        Some(r#"{"value":"sk-mallory-own"}"#),
        NONE,
    ),
];

/// What acme can read of its own things, to compare before and after mallory's probes.
const ACME_VIEWS: &[&str] = &[
    "/v1/agents",
    "/v1/agents/{agent}",
    "/v1/agents/{agent}-core",
    "/v1/workflows/{workflow}",
    "/v1/workflows/{workflow}/plan",
    "/v1/workflows/{workflow}/history",
    "/v1/sessions/{session}",
    "/v1/sessions/{session}/turns/1",
    "/v1/secrets",
    "/v1/secrets/{secret}",
    "/v1/quotas",
];

async fn acme_views(stack: &LocalStack, ids: &[&Ids]) -> Vec<(String, Value)> {
    let mut views = Vec::new();
    for ids in ids {
        for path in ACME_VIEWS {
            let path = ids.fill(path);
            let reply = call(stack, ACME, "GET", &path, None).await;
            assert_eq!(reply.status, 200, "acme reads {path}: {:#}", reply.body);
            views.push((path, reply.body));
        }
    }
    views
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_ids_answer_as_ids_that_exist_nowhere_on_every_verb() {
    // Learning is off so that acme's views do not change on their own while mallory probes.
    let stack = start_stack("atk-every-verb", |s| s.run_learn = false).await;
    let worker = agent_replying(AgentReply::ok(json!({ "done": true }))).await;
    let held = HeldAgent::start().await;
    let core = agent(Arc::new(|call: &Value| {
        let text = call
            .pointer("/input/text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        AgentReply::ok(json!({ "response": format!("acme's core heard `{text}`") }))
    }))
    .await;
    register_url_as(&stack, ACME, "ledger", &worker.url, &["ledger.work"]).await;
    register_as(
        &stack,
        ACME,
        json!({ "name": "ledger-core", "endpoint": core.url, "capabilities": ["conversation.ledger"],
                "timeout_ms": 5000, "conversation": { "role": "core" } }),
    )
    .await;
    register_as(
        &stack,
        ACME,
        json!({ "name": "ledger-held", "endpoint": held.url, "capabilities": ["ledger.held"],
                "timeout_ms": 120000 }),
    )
    .await;
    // A finished workflow, and one whose task is still with its agent.
    let work = |capability: &str| {
        json!({ "name": "acme's work", "tasks": [
            { "id": "work", "capability": capability, "input": { "text": "acme's secret plan" } }
        ]})
    };
    let finished = id_of(&submit_as(&stack, ACME, &work("ledger.work")).await);
    assert_eq!(
        finished_as(&stack, ACME, &finished).await["status"],
        "succeeded"
    );
    let running = id_of(&submit_as(&stack, ACME, &work("ledger.held")).await);
    held.called().await;
    let session = expect(
        call(&stack, ACME, "POST", "/v1/sessions", Some(&json!({}))).await,
        201,
        "acme opens a session",
    )["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = expect(
        call(
            &stack,
            ACME,
            "POST",
            &format!("/v1/sessions/{session}/messages"),
            Some(&json!({ "text": "first" })),
        )
        .await,
        200,
        "acme's turn",
    );
    assert_eq!(first["status"], "answered", "{first:#}");
    let secret = unique("vault");
    expect(
        call(
            &stack,
            ACME,
            "PUT",
            &format!("/v1/secrets/{secret}"),
            Some(&json!({ "value": "sk-acme-vault" })),
        )
        .await,
        201,
        "acme keeps a secret",
    );

    let acme_ids: Vec<Ids> = [&finished, &running]
        .iter()
        .map(|workflow| Ids {
            agent: "ledger".into(),
            workflow: workflow.to_string(),
            session: session.clone(),
            secret: secret.clone(),
            tenant: ACME.into(),
        })
        .collect();
    let nowhere = Ids {
        agent: "phantom".into(),
        workflow: "0190aaaa-0000-7000-8000-00000000dead".into(),
        session: "0190aaaa-0000-7000-8000-00000000beef".parse().unwrap(),
        secret: unique("ghost"),
        tenant: "nobody".parse().unwrap(),
    };
    let all_ids: Vec<&Ids> = acme_ids.iter().collect();
    let before = acme_views(&stack, &all_ids).await;

    let mut probed = 0;
    for (method, path, body, headers) in PROBES {
        // Workflow probes for both of acme's workflows; the others once.
        let targets: &[Ids] = if path.contains("{workflow}") {
            &acme_ids
        } else {
            &acme_ids[..1]
        };
        for ids in targets {
            let request = |ids: &Ids| (ids.fill(path), body.map(|b| ids.fill(b)));
            let (theirs_path, theirs_body) = request(ids);
            let theirs = send(
                &stack,
                method,
                &theirs_path,
                Some(MALLORY),
                headers,
                theirs_body.as_deref(),
            )
            .await;
            let (nowhere_path, nowhere_body) = request(&nowhere);
            let none = send(
                &stack,
                method,
                &nowhere_path,
                Some(MALLORY),
                headers,
                nowhere_body.as_deref(),
            )
            .await;
            eprintln!(
                "mallory {method} {theirs_path} {headers:?}: {} {}",
                theirs.status, theirs.text
            );
            assert!(
                theirs.status < 500,
                "{method} {theirs_path}: {:#}",
                theirs.body
            );
            assert_eq!(
                (theirs.status, ids.normalize(&theirs.body)),
                (none.status, nowhere.normalize(&none.body)),
                "mallory's {method} {theirs_path} {headers:?} must answer as for an id that \
                 exists nowhere"
            );
            if !path.starts_with("/v1/tenants/") && !matches!(theirs.status, 200 | 201) {
                assert_eq!(
                    theirs.status, 404,
                    "{method} {theirs_path}: {:#}",
                    theirs.body
                );
            }
            probed += 1;
        }
    }
    assert!(probed > PROBES.len());

    // Non-operators get 403 on the quota routes for every id alike.
    for tenant in [ACME, MALLORY, "nobody", "x"] {
        let path = format!("/v1/tenants/{tenant}/quotas");
        let reply = call(&stack, MALLORY, "GET", &path, None).await;
        assert_error(&reply, 403, "forbidden", &path);
        assert!(
            !reply.text.contains(&format!("/{tenant}/")),
            "{}",
            reply.text
        );
    }

    let after = acme_views(&stack, &all_ids).await;
    for ((path, was), (_, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "acme's {path} changed while mallory probed");
    }
    // Acme's session still works, and its held task is still running.
    let second = expect(
        call(
            &stack,
            ACME,
            "POST",
            &format!("/v1/sessions/{session}/messages"),
            Some(&json!({ "text": "second" })),
        )
        .await,
        200,
        "acme's next turn",
    );
    assert_eq!(second["turn"], 2, "{second:#}");
    assert_eq!(
        second["response"], "acme's core heard `second`",
        "{second:#}"
    );
    held.release();
    assert_eq!(
        finished_as(&stack, ACME, &running).await["status"],
        "succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_a_tenant_only_its_own_running_workflows_and_never_the_queues() {
    let stack = start_stack("atk-stats", |s| s.run_learn = false).await;
    let held = HeldAgent::start().await;
    register_as(
        &stack,
        ACME,
        json!({ "name": "held", "endpoint": held.url, "capabilities": ["hold"], "timeout_ms": 120000 }),
    )
    .await;
    let running = id_of(&submit_as(&stack, ACME, &one_task("hold", json!({}))).await);
    held.called().await;

    let theirs = expect(
        call(&stack, ACME, "GET", "/v1/stats", None).await,
        200,
        "acme's stats",
    );
    assert_eq!(theirs["workflows"]["running"], 1, "{theirs:#}");
    assert!(theirs.get("queues").is_none(), "{theirs:#}");
    let mine = expect(
        call(&stack, MALLORY, "GET", "/v1/stats", None).await,
        200,
        "mallory's stats",
    );
    assert_eq!(mine["workflows"]["running"], 0, "{mine:#}");
    assert!(
        mine.get("queues").is_none(),
        "a tenant sees no queues: {mine:#}"
    );
    assert_eq!(mine["routing"]["calls"], 0, "{mine:#}");
    assert_eq!(mine["health"]["total"], 0, "{mine:#}");
    // Claiming a scope in a header that is not the operator's counts for nothing.
    for scopes in ["baton/operators", "openid", "baton/read baton/write", ""] {
        let reply = send(
            &stack,
            "GET",
            "/v1/stats",
            Some(MALLORY),
            &[("x-baton-scopes", scopes)],
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{:#}", reply.body);
        assert!(
            reply.body.get("queues").is_none(),
            "{scopes:?}: {:#}",
            reply.body
        );
    }
    // The operator sees the deployment's queues, beside its own tenant's figures.
    let ops = send(&stack, "GET", "/v1/stats", Some(MALLORY), &[OPERATOR], None).await;
    assert_eq!(ops.status, 200, "{:#}", ops.body);
    assert!(
        ops.body["queues"].as_array().is_some_and(|q| !q.is_empty()),
        "{:#}",
        ops.body
    );
    assert_eq!(ops.body["workflows"]["running"], 0, "{:#}", ops.body);

    held.release();
    assert_eq!(
        finished_as(&stack, ACME, &running).await["status"],
        "succeeded"
    );
    let theirs = expect(
        call(&stack, ACME, "GET", "/v1/stats", None).await,
        200,
        "acme's stats after",
    );
    assert_eq!(theirs["workflows"]["running"], 0, "{theirs:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_answer_is_generic_and_names_only_the_request_id() {
    let stack = api_only_stack("atk-503").await;
    let mut settings = stack.settings.clone();
    let missing = format!("{}-missing", stack.settings.state_table);
    settings.state_table = missing.clone();
    let api = baton_orchestrate::Api::new(
        stack.clients.store(&settings),
        stack.clients.queues(&settings),
        settings,
    );
    let workflow = one_task("c", json!({})).to_string();
    let agent = json!({ "name": "a", "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] })
        .to_string();
    let requests: [(&str, &str, Option<&str>); 6] = [
        ("GET", "/v1/agents", None),
        ("GET", "/v1/agents/a", None),
        ("POST", "/v1/agents", Some(&agent)),
        ("POST", "/v1/workflows", Some(&workflow)),
        (
            "GET",
            "/v1/workflows/0190aaaa-0000-7000-8000-00000000dead",
            None,
        ),
        ("GET", "/v1/quotas", None),
    ];
    for (i, (method, path, body)) in requests.iter().enumerate() {
        let request_id = format!("Req{i}-UZu8XgE1IAMEVRg=");
        let (status, header, text) = handle(
            &api,
            gateway_event(method, path, Some(MALLORY), *body, &request_id),
        )
        .await;
        let answer: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(status, 503, "{method} {path}: {answer:#}");
        assert_eq!(answer["error"]["code"], "unavailable", "{answer:#}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("request id"), "{message}");
        assert!(message.contains(&request_id), "{message}");
        assert_eq!(
            answer["error"]["details"]["request_id"],
            request_id.as_str()
        );
        assert_eq!(header.as_deref(), Some(request_id.as_str()), "x-request-id");
        for secret in [
            missing.as_str(),
            stack.settings.state_table.as_str(),
            "arn:",
            emulator_endpoint(),
            "127.0.0.1",
            "ResourceNotFound",
            "dynamodb",
            "DynamoDB",
        ] {
            assert!(
                !text.contains(secret),
                "{method} {path} shows `{secret}`: {text}"
            );
        }
    }
    // A request without API Gateway's id gets one of its own, the same in body and header.
    let request = gateway_event("GET", "/v1/agents", Some(MALLORY), None, "");
    let (status, header, text) = handle(&api, request).await;
    let answer: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(status, 503, "{answer:#}");
    let id = answer["error"]["details"]["request_id"]
        .as_str()
        .unwrap_or_default();
    assert!(!id.is_empty(), "{answer:#}");
    assert_eq!(header.as_deref(), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_failures_keep_no_aws_identifiers() {
    let stack = start_stack("atk-redacted", |s| s.run_learn = false).await;
    // In mallory's namespace, but the Lambda service has no such function.
    let missing = function(MALLORY, "missing");
    register_as(&stack, MALLORY, lambda_body("missing", "gone", &missing)).await;
    let id = id_of(&submit_as(&stack, MALLORY, &one_task("gone", json!({}))).await);
    let finished = finished_as(&stack, MALLORY, &id).await;
    assert_eq!(finished["status"], "failed", "{finished:#}");
    let error = &task(&finished, "t")["error"];
    assert_eq!(error["kind"], "service_error", "{error:#}");
    assert_eq!(error["http_status"], 404, "{error:#}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("ResourceNotFoundException"), "{message}");
    assert!(!message.contains("123456789012"), "{message}");
    assert!(message.contains("[arn]"), "{message}");
    for path in [
        format!("/v1/workflows/{id}"),
        format!("/v1/workflows/{id}/history"),
        format!("/v1/workflows/{id}/tasks/t"),
    ] {
        let view = call(&stack, MALLORY, "GET", &path, None).await;
        assert_eq!(view.status, 200, "{path}: {:#}", view.body);
        assert!(!view.text.contains("123456789012"), "{path}: {}", view.text);
        assert!(!view.text.contains("arn:aws"), "{path}: {}", view.text);
    }
    assert!(
        !stored_anywhere(&stack, "123456789012").await,
        "a stored item keeps the account id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classifiers_idempotency_key_carries_the_tenant() {
    let stack = start_stack("atk-classifier-key", |s| s.run_learn = false).await;
    // One classifier server, registered by both tenants.
    let classifier = agent_replying(AgentReply::ok(json!({ "agent": null }))).await;
    let core = agent_replying(AgentReply::ok(json!({ "response": "ok" }))).await;
    let mut sessions = Vec::new();
    for tenant in [ACME, MALLORY] {
        register_url_as(&stack, tenant, "classifier", &classifier.url, &["classify"]).await;
        register_as(
            &stack,
            tenant,
            json!({ "name": "core", "endpoint": core.url, "capabilities": ["conversation.core"],
                    "timeout_ms": 5000, "conversation": { "role": "core" } }),
        )
        .await;
        let session = expect(
            call(&stack, tenant, "POST", "/v1/sessions", Some(&json!({}))).await,
            201,
            "a session",
        )["session_id"]
            .as_str()
            .unwrap()
            .to_string();
        let turn = expect(
            call(
                &stack,
                tenant,
                "POST",
                &format!("/v1/sessions/{session}/messages"),
                Some(&json!({ "text": format!("{tenant} speaking") })),
            )
            .await,
            200,
            "a turn",
        );
        assert_eq!(turn["analysis"]["classifier"], "classifier", "{turn:#}");
        sessions.push((tenant, session));
    }
    let calls = classifier.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    for (tenant, session) in &sessions {
        let seen = calls
            .iter()
            .find(|c| c.body["input"]["text"] == format!("{tenant} speaking"))
            .unwrap_or_else(|| panic!("{tenant}'s classify call in {calls:#?}"));
        let key = seen.idempotency_key.as_deref().unwrap_or_default();
        assert!(key.starts_with(&format!("{tenant}:")), "{tenant}: {key}");
        assert_eq!(key, format!("{tenant}:{session}:classify-1:1"));
    }
}

// ---------------------------------------------------------------------------------------
// 4. Quotas
// ---------------------------------------------------------------------------------------

async fn set_quotas(stack: &LocalStack, tenant: &str, quotas: Value) -> Value {
    let path = format!("/v1/tenants/{tenant}/quotas");
    expect(
        operator(stack, "PUT", &path, Some(&quotas)).await,
        200,
        "the operator sets quotas",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_sets_quotas_and_out_of_range_values_name_their_field() {
    let stack = api_only_stack("atk-quota-api").await;
    let path = "/v1/tenants/mallory/quotas";
    let overrides = json!({ "agents": 5, "running_workflows": 3, "tasks_per_second": 2.5,
                            "task_burst": 4, "task_backlog": 10, "urgent_share": 0.5 });
    let before = state_keys(&stack).await;
    // Not the operator: 403 for its own id, another's, and one that exists nowhere, alike.
    let mut refusals = Vec::new();
    for tenant in [MALLORY, ACME, "nobody"] {
        let path = format!("/v1/tenants/{tenant}/quotas");
        for (method, body) in [("GET", None), ("PUT", Some(&overrides))] {
            for headers in [&[][..], &[("x-baton-scopes", "baton/operators openid")][..]] {
                let body = body.map(Value::to_string);
                let reply = send(
                    &stack,
                    method,
                    &path,
                    Some(MALLORY),
                    headers,
                    body.as_deref(),
                )
                .await;
                assert_error(&reply, 403, "forbidden", &format!("{method} {path}"));
                refusals.push(reply.body);
            }
        }
    }
    assert!(refusals.windows(2).all(|w| w[0] == w[1]), "{refusals:#?}");
    let own = call(&stack, MALLORY, "PUT", "/v1/quotas", Some(&overrides)).await;
    assert_error(
        &own,
        405,
        "method_not_allowed",
        "a tenant sets its own quotas",
    );
    assert_eq!(
        state_keys(&stack).await,
        before,
        "a refused change stores nothing"
    );

    let set = set_quotas(&stack, MALLORY, overrides.clone()).await;
    assert_eq!(set["tenant"], MALLORY);
    assert_eq!(set["quotas"], overrides, "{set:#}");
    assert_eq!(set["overrides"], overrides, "{set:#}");
    assert_eq!(
        set["usage"],
        json!({ "agents": 0, "running_workflows": 0 }),
        "{set:#}"
    );

    let out_of_range = [
        ("agents", json!(0)),
        ("agents", json!(1001)),
        ("running_workflows", json!(0)),
        ("running_workflows", json!(100_001)),
        ("tasks_per_second", json!(0)),
        ("tasks_per_second", json!(-1)),
        ("tasks_per_second", json!(100_001)),
        ("task_burst", json!(0)),
        ("task_backlog", json!(0)),
        ("task_backlog", json!(10_000_001)),
        ("urgent_share", json!(-0.1)),
        ("urgent_share", json!(1.5)),
    ];
    for (field, value) in out_of_range {
        let body = json!({ field: value });
        let reply = operator(&stack, "PUT", path, Some(&body)).await;
        assert_error(&reply, 400, "invalid_request", &body.to_string());
        assert_eq!(
            reply.body["error"]["details"]["field"], field,
            "{body}: {:#}",
            reply.body
        );
    }
    for body in [
        json!({ "agents": "many" }),
        json!({ "agents": -1 }),
        json!({ "colour": 1 }),
        json!([1]),
    ] {
        let reply = operator(&stack, "PUT", path, Some(&body)).await;
        assert_eq!(reply.status, 400, "{body}: {:#}", reply.body);
    }
    let bad_id = format!("/v1/tenants/{}/quotas", "x".repeat(65));
    let reply = operator(&stack, "GET", &bad_id, None).await;
    assert_error(&reply, 400, "invalid_request", "a malformed tenant id");
    assert_eq!(reply.body["error"]["details"]["parameter"], "id");

    // Nothing refused changed them; each tenant sees its own.
    let read = expect(
        operator(&stack, "GET", path, None).await,
        200,
        "the operator reads",
    );
    assert_eq!(read["quotas"], overrides, "{read:#}");
    let mine = expect(
        call(&stack, MALLORY, "GET", "/v1/quotas", None).await,
        200,
        "own",
    );
    assert_eq!(mine["tenant"], MALLORY);
    assert_eq!(mine["quotas"], overrides, "{mine:#}");
    let theirs = expect(
        call(&stack, ACME, "GET", "/v1/quotas", None).await,
        200,
        "acme's",
    );
    assert_eq!(theirs["tenant"], ACME);
    assert_eq!(theirs["overrides"], json!({}), "{theirs:#}");
    assert_eq!(theirs["quotas"]["agents"], 100, "{theirs:#}");
    assert_eq!(theirs["quotas"]["urgent_share"], 0.2, "{theirs:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_quota_refuses_the_registration_past_it_and_stores_nothing() {
    let stack = api_only_stack("atk-quota-agents").await;
    set_quotas(&stack, MALLORY, json!({ "agents": 2 })).await;
    let body = |name: &str| json!({ "name": name, "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] });
    register_as(&stack, MALLORY, body("one")).await;
    register_as(&stack, MALLORY, body("two")).await;
    let before = state_keys(&stack).await;
    let third = call(&stack, MALLORY, "POST", "/v1/agents", Some(&body("three"))).await;
    assert_error(&third, 409, "quota_exceeded", "the third agent");
    assert_eq!(
        third.body["error"]["details"]["quota"], "agents",
        "{:#}",
        third.body
    );
    assert_eq!(
        third.body["error"]["details"]["limit"], 2,
        "{:#}",
        third.body
    );
    assert!(
        third.header("retry-after").is_none(),
        "nothing to wait for: delete one"
    );
    let by_put = call(
        &stack,
        MALLORY,
        "PUT",
        "/v1/agents/three",
        Some(&body("three")),
    )
    .await;
    assert_error(&by_put, 409, "quota_exceeded", "the third agent by PUT");
    assert_eq!(
        state_keys(&stack).await,
        before,
        "a refused agent stores nothing"
    );
    // A replacement of an agent it has is not a new one.
    let replaced = send(
        &stack,
        "PUT",
        "/v1/agents/two",
        Some(MALLORY),
        &[("if-match", "\"1\"")],
        Some(&json!({ "endpoint": "http://127.0.0.1:9/x", "capabilities": ["c"] }).to_string()),
    )
    .await;
    assert_eq!(replaced.status, 200, "{:#}", replaced.body);
    let usage = expect(
        call(&stack, MALLORY, "GET", "/v1/quotas", None).await,
        200,
        "usage",
    );
    assert_eq!(usage["usage"]["agents"], 2, "{usage:#}");
    // Acme is not limited by mallory's quota.
    for name in ["one", "two", "three"] {
        register_as(&stack, ACME, body(name)).await;
    }
    // Once one is gone, there is room again.
    expect(
        call(&stack, MALLORY, "DELETE", "/v1/agents/one", None).await,
        200,
        "one deleted",
    );
    register_as(&stack, MALLORY, body("three")).await;
}

/// An API-only stack whose store calls go through the fault proxy, which throttles the first
/// `times` writes of `operation` whose body holds `body_contains`: the SDK writes again after
/// its back-off. That only widens the moment between a request's read and its write, which
/// any two concurrent requests can meet without it.
async fn racing_stack(name: &str, operation: &str, body_contains: &str, times: u32) -> LocalStack {
    let stack = start_stack(name, |s| {
        *s = StackOptions {
            prefix: std::mem::take(&mut s.prefix),
            faults: Some(baton_local::faults::FaultPlan::default()),
            ..StackOptions::api_only("")
        }
    })
    .await;
    stack
        .faults()
        .expect("the fault proxy")
        .add_rule(baton_local::faults::FaultRule {
            operation: operation.into(),
            body_contains: vec![body_contains.into()],
            fault: baton_local::faults::Fault::Throttle,
            times,
        })
        .expect("a rule");
    stack
}

/// Each registration reads the registry, checks the quota, then writes its own item on the
/// condition that its name is free: nothing in the write stands for the count it was decided on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_cannot_exceed_the_agent_quota() {
    const RACERS: usize = 8;
    let stack = racing_stack(
        "atk-agents-race",
        "TransactWriteItems",
        "mallory#AGENTS",
        RACERS as u32,
    )
    .await;
    set_quotas(&stack, MALLORY, json!({ "agents": 2 })).await;
    let attempts = (0..RACERS).map(|i| {
        let body = json!({ "name": format!("racer-{i}"), "endpoint": "http://127.0.0.1:9/",
                           "capabilities": ["c"] });
        let stack = &stack;
        async move { call(stack, MALLORY, "POST", "/v1/agents", Some(&body)).await }
    });
    let replies = futures::future::join_all(attempts).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    for reply in &replies {
        assert!(
            reply.status == 201 || reply.body["error"]["code"] == "quota_exceeded",
            "{:#}",
            reply.body
        );
    }
    let listed = expect(
        call(&stack, MALLORY, "GET", "/v1/agents", None).await,
        200,
        "list",
    );
    let registered = listed["agents"].as_array().map_or(0, Vec::len);
    assert!(
        created <= 2 && registered <= 2,
        "a quota of 2 agents let {created} of {RACERS} concurrent registrations through \
         ({registered} registered)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_workflow_quota_refuses_the_next_submission_with_retry_after() {
    let stack = start_stack("atk-quota-running", |s| s.run_learn = false).await;
    set_quotas(&stack, MALLORY, json!({ "running_workflows": 1 })).await;
    let held = HeldAgent::start().await;
    for tenant in [MALLORY, ACME] {
        register_as(
            &stack,
            tenant,
            json!({ "name": "held", "endpoint": held.url, "capabilities": ["hold"], "timeout_ms": 120000 }),
        )
        .await;
    }
    let first = id_of(&submit_as(&stack, MALLORY, &one_task("hold", json!({}))).await);
    held.called().await;
    let before = state_keys(&stack).await;
    let second = call(
        &stack,
        MALLORY,
        "POST",
        "/v1/workflows",
        Some(&one_task("hold", json!({}))),
    )
    .await;
    assert_error(&second, 429, "quota_exceeded", "the second workflow");
    assert_eq!(
        second.body["error"]["details"]["quota"],
        "running_workflows"
    );
    assert_eq!(second.body["error"]["details"]["limit"], 1);
    let retry_after: u64 = second
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(
        state_keys(&stack).await,
        before,
        "a refused submission stores nothing"
    );
    let listed = expect(
        call(&stack, MALLORY, "GET", "/v1/workflows", None).await,
        200,
        "list",
    );
    assert_eq!(
        listed["workflows"].as_array().map(Vec::len),
        Some(1),
        "{listed:#}"
    );
    let usage = expect(
        call(&stack, MALLORY, "GET", "/v1/quotas", None).await,
        200,
        "usage",
    );
    assert_eq!(usage["usage"]["running_workflows"], 1, "{usage:#}");

    // Acme is not limited by mallory's quota.
    let acme_one = id_of(&submit_as(&stack, ACME, &one_task("hold", json!({}))).await);
    let acme_two = id_of(&submit_as(&stack, ACME, &one_task("hold", json!({}))).await);

    // Once mallory's workflow ends, it may submit again.
    held.release();
    for (tenant, id) in [(MALLORY, &first), (ACME, &acme_one), (ACME, &acme_two)] {
        assert_eq!(finished_as(&stack, tenant, id).await["status"], "succeeded");
    }
    submit_as(&stack, MALLORY, &one_task("hold", json!({}))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_pace_spreads_its_tasks_and_its_backlog_refuses_what_would_wait_too_long() {
    let stack = start_stack("atk-quota-pace", |s| s.run_learn = false).await;
    set_quotas(
        &stack,
        MALLORY,
        json!({ "tasks_per_second": 2, "task_burst": 1, "task_backlog": 3 }),
    )
    .await;
    let worker = agent_replying(AgentReply::ok(json!({ "done": true }))).await;
    for tenant in [MALLORY, ACME] {
        register_url_as(&stack, tenant, "worker", &worker.url, &["work"]).await;
    }
    let independent = |n: usize| {
        let tasks: Vec<Value> = (0..n)
            .map(|i| json!({ "id": format!("t{i}"), "capability": "work" }))
            .collect();
        json!({ "name": "independent", "tasks": tasks })
    };
    let accepted = submit_as(&stack, MALLORY, &independent(4)).await;
    assert_eq!(accepted["pacing"]["paced_tasks"], 3, "{accepted:#}");
    assert_eq!(accepted["pacing"]["tasks_per_second"], 2.0, "{accepted:#}");
    let id = id_of(&accepted);

    // More than the burst and backlog together can never be admitted: refused for good (a
    // 409, as for a count the tenant must bring down), with no Retry-After to come back after.
    let before = state_keys(&stack).await;
    let never = call(
        &stack,
        MALLORY,
        "POST",
        "/v1/workflows",
        Some(&independent(5)),
    )
    .await;
    assert_error(&never, 409, "quota_exceeded", "never be admitted");
    assert!(never.header("retry-after").is_none(), "{:?}", never.body);

    // Three more right away would leave more than three waiting: refused, nothing stored.
    let refused = call(
        &stack,
        MALLORY,
        "POST",
        "/v1/workflows",
        Some(&independent(3)),
    )
    .await;
    assert_error(&refused, 429, "quota_exceeded", "past the backlog");
    assert_eq!(
        refused.body["error"]["details"]["quota"], "task_backlog",
        "{:#}",
        refused.body
    );
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(
        state_keys(&stack).await,
        before,
        "a refused submission stores nothing"
    );

    // Another tenant at the same moment is not paced.
    let theirs = submit_as(&stack, ACME, &independent(4)).await;
    assert!(theirs.get("pacing").is_none(), "{theirs:#}");

    let finished = finished_as(&stack, MALLORY, &id).await;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    // The k-th task (in start order) has its turn k/2 s after the submission; routing may take
    // a task up to a second early. A lower bound the pace guarantees, not a timing guess.
    let created = parse_rfc3339(finished["created_at"].as_str().unwrap()).expect("created_at");
    let mut started: Vec<i64> = finished["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| parse_rfc3339(t["started_at"].as_str().expect("started_at")).unwrap())
        .collect();
    started.sort_unstable();
    for (k, at) in started.iter().enumerate() {
        let turn = created + k as i64 * 500;
        assert!(
            *at >= turn - 1000,
            "task {k} started {} ms after the submission, before its turn at {} ms",
            at - created,
            turn - created
        );
    }
    let id = id_of(&theirs);
    assert_eq!(finished_as(&stack, ACME, &id).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_tasks_past_the_urgent_share_run_in_the_high_band() {
    let stack = api_only_stack("atk-quota-urgent").await;
    set_quotas(&stack, MALLORY, json!({ "urgent_share": 0 })).await;
    let urgent = json!({ "name": "alert", "tasks": [
        { "id": "alert", "capability": "fraud.check", "type": "fraud_detection", "priority": "critical" }
    ]});
    let mine = submit_as(&stack, MALLORY, &urgent).await;
    assert_eq!(mine["demoted_from_urgent"], 1, "{mine:#}");
    let view = expect(
        call(
            &stack,
            MALLORY,
            "GET",
            &format!("/v1/workflows/{}", id_of(&mine)),
            None,
        )
        .await,
        200,
        "mallory's view",
    );
    assert_eq!(task(&view, "alert")["band"], "high", "{view:#}");
    // Acme, under the default share, keeps its urgent task urgent.
    let theirs = submit_as(&stack, ACME, &urgent).await;
    assert!(theirs.get("demoted_from_urgent").is_none(), "{theirs:#}");
    let view = expect(
        call(
            &stack,
            ACME,
            "GET",
            &format!("/v1/workflows/{}", id_of(&theirs)),
            None,
        )
        .await,
        200,
        "acme's view",
    );
    assert_eq!(task(&view, "alert")["band"], "urgent", "{view:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_tenant_is_refused_in_header_mode() {
    let stack = api_only_stack("atk-no-tenant").await;
    let agent = json!({ "name": "a", "endpoint": "http://127.0.0.1:9/", "capabilities": ["c"] })
        .to_string();
    let workflow = one_task("c", json!({})).to_string();
    let value = json!({ "value": "sk-nobody" }).to_string();
    let quotas = json!({ "agents": 1 }).to_string();
    let requests: [(&str, &str, Option<&str>); 10] = [
        ("GET", "/v1/agents", None),
        ("POST", "/v1/agents", Some(&agent)),
        ("POST", "/v1/workflows", Some(&workflow)),
        ("POST", "/v1/sessions", Some("{}")),
        ("GET", "/v1/secrets", None),
        ("PUT", "/v1/secrets/openai", Some(&value)),
        ("GET", "/v1/quotas", None),
        ("GET", "/v1/stats", None),
        ("GET", "/v1/tenants/acme/quotas", None),
        ("PUT", "/v1/tenants/acme/quotas", Some(&quotas)),
    ];
    for (method, path, body) in requests {
        // Even with the operator's scope: the operator authenticates as a tenant too.
        for headers in [&[][..], &[OPERATOR][..]] {
            let reply = send(&stack, method, path, None, headers, body).await;
            assert_error(&reply, 401, "unauthorized", &format!("{method} {path}"));
        }
    }
    // Two tenants named at once is no tenant: refused, never either one's answer.
    for (first, second) in [(MALLORY, ACME), (ACME, MALLORY)] {
        let reply = send(
            &stack,
            "GET",
            "/v1/agents",
            None,
            &[("x-tenant-id", first), ("x-tenant-id", second)],
            None,
        )
        .await;
        assert_error(&reply, 400, "invalid_request", "two tenants");
        assert_eq!(reply.body["error"]["details"]["header"], "x-tenant-id");
    }
    assert_eq!(
        state_items(&stack).await,
        0,
        "a refused request stores nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_jwt_mode_only_the_tokens_scope_or_group_makes_the_operator() {
    use baton_local::api_gateway::{Authorizer, JwtAuthorizer};
    let authorizer = Arc::new(JwtAuthorizer::local(b"attacks test secret"));
    let jwt = Authorizer::Jwt(authorizer.clone());
    let stack = start_stack("atk-jwt-operator", |s| {
        *s = StackOptions {
            prefix: std::mem::take(&mut s.prefix),
            authorizer: jwt,
            ..StackOptions::api_only("")
        }
    })
    .await;
    let bearer = |claims: Value| format!("Bearer {}", authorizer.token(&claims));
    let mallory = bearer(json!({ "sub": "m", "tenant_id": MALLORY }));
    let quotas = json!({ "agents": 1000 }).to_string();
    let path = "/v1/tenants/mallory/quotas";
    let before = state_keys(&stack).await;
    // The header counts for nothing in jwt mode, nor does a scope that is almost the one.
    let pretenders = [
        vec![
            ("authorization", mallory.clone()),
            ("x-baton-scopes", "baton/operator".into()),
        ],
        vec![(
            "authorization",
            bearer(json!({ "tenant_id": MALLORY, "scope": "baton/operators" })),
        )],
        vec![(
            "authorization",
            bearer(json!({ "tenant_id": MALLORY, "scope": "openid baton/write" })),
        )],
        vec![(
            "authorization",
            bearer(json!({ "tenant_id": MALLORY, "cognito:groups": ["admins"] })),
        )],
        vec![(
            "authorization",
            bearer(json!({ "tenant_id": MALLORY, "operator": true })),
        )],
    ];
    for headers in &pretenders {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let set = send(&stack, "PUT", path, None, &headers, Some(&quotas)).await;
        assert_error(&set, 403, "forbidden", &format!("{headers:?}"));
        let stats = send(&stack, "GET", "/v1/stats", None, &headers, None).await;
        assert_eq!(stats.status, 200, "{:#}", stats.body);
        assert!(
            stats.body.get("queues").is_none(),
            "{headers:?}: {:#}",
            stats.body
        );
    }
    assert_eq!(
        state_keys(&stack).await,
        before,
        "a refused change stores nothing"
    );
    // The token's scope, or a Cognito group, does.
    for claims in [
        json!({ "tenant_id": "ops", "scope": "openid baton/operator" }),
        json!({ "tenant_id": "ops", "cognito:groups": ["admins", "baton/operator"] }),
    ] {
        let operator = bearer(claims.clone());
        let set = send(
            &stack,
            "PUT",
            path,
            None,
            &[("authorization", operator.as_str())],
            Some(&quotas),
        )
        .await;
        assert_eq!(set.status, 200, "{claims}: {:#}", set.body);
        assert_eq!(set.body["quotas"]["agents"], 1000, "{:#}", set.body);
    }
}

/// Racing writes of new secrets each take a place on the tenant's counter before the secret
/// is made, so the limit holds however they interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_secret_writes_cannot_exceed_the_secrets_a_tenant_may_keep() {
    // A tenant of its own: the emulator's Secrets Manager is shared by every test here.
    let tenant = "mallory-hoard";
    let stack = api_only_stack("atk-secrets-race").await;
    let limit = 50;
    let value = json!({ "value": "sk-hoarded" });
    for i in 0..limit - 2 {
        let path = format!("/v1/secrets/kept-{i}");
        expect(
            call(&stack, tenant, "PUT", &path, Some(&value)).await,
            201,
            &path,
        );
    }
    const RACERS: usize = 16;
    let attempts = (0..RACERS).map(|i| {
        let (stack, value) = (&stack, &value);
        async move {
            let path = format!("/v1/secrets/racer-{i}");
            call(stack, tenant, "PUT", &path, Some(value)).await
        }
    });
    let replies = futures::future::join_all(attempts).await;
    for reply in &replies {
        assert!(
            reply.status == 201 || reply.body["error"]["code"] == "quota_exceeded",
            "{:#}",
            reply.body
        );
    }
    let created = replies.iter().filter(|r| r.status == 201).count();
    let listed = expect(
        call(&stack, tenant, "GET", "/v1/secrets", None).await,
        200,
        "list",
    );
    let kept = listed["secrets"].as_array().map_or(0, Vec::len);
    assert!(
        created <= 2,
        "a tenant at {} of its {limit} secrets got {created} of {RACERS} concurrent new ones \
         ({kept} listed, a listing shows at most {limit})",
        limit - 2
    );
}

// ---------------------------------------------------------------------------------------
// 5. Shared functions
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_in_whose_dependencies_exceed_their_limit_fails_without_calling_its_agent() {
    let stack = start_stack("atk-fan-in", |s| s.run_learn = false).await;
    // Each answers about 2.5 MB of JSON (in the payload bucket): four of them come to more
    // than the 8 MiB a task may receive from its dependencies.
    let producer = agent_replying(AgentReply::ok(json!({ "blob": "x".repeat(2_500_000) }))).await;
    let gatherer = agent_replying(AgentReply::ok(json!({ "gathered": true }))).await;
    register_url_as(&stack, MALLORY, "producer", &producer.url, &["produce"]).await;
    register_url_as(&stack, MALLORY, "gatherer", &gatherer.url, &["gather"]).await;
    let producers = ["p1", "p2", "p3", "p4"];
    let mut tasks: Vec<Value> = producers
        .iter()
        .map(|id| json!({ "id": id, "capability": "produce" }))
        .collect();
    tasks.push(json!({ "id": "fan-in", "capability": "gather", "depends_on": producers }));
    let id = id_of(
        &submit_as(
            &stack,
            MALLORY,
            &json!({ "name": "fan-in", "tasks": tasks }),
        )
        .await,
    );
    let finished = finished_as(&stack, MALLORY, &id).await;
    assert_eq!(finished["status"], "failed", "{finished:#}");
    for p in producers {
        assert_eq!(task(&finished, p)["status"], "succeeded", "{p}");
    }
    let fan_in = task(&finished, "fan-in");
    assert_eq!(fan_in["status"], "failed", "{fan_in:#}");
    assert_eq!(fan_in["error"]["kind"], "input_too_large", "{fan_in:#}");
    assert_eq!(fan_in["error"]["retryable"], false, "{fan_in:#}");
    assert_eq!(fan_in["attempt"], 1, "not retried: {fan_in:#}");
    assert_eq!(producer.calls().len(), 4);
    assert!(
        gatherer.calls().is_empty(),
        "the fan-in's agent is never called"
    );
}
