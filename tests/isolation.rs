//! Tenants from authentication, and tenant isolation, on the local stack.
//!
//! With `AuthMode=jwt` the API Gateway stand-in verifies bearer tokens as API Gateway's JWT
//! authorizer does and the tenant is the token's claim; `X-Tenant-Id` counts for nothing. In
//! either mode one tenant can read, change, list, cancel and delete none of another tenant's
//! agents, workflows or sessions, and no answer tells it whether they exist.

use std::sync::Arc;

use baton_local::agents::AgentReply;
use baton_local::api_gateway::{Authorizer, JwtAuthorizer};
use baton_local::stack::LocalStack;
use baton_tests::*;
use baton_types::clock::now_ms;
use serde_json::{json, Value};

/// Who sends a request: the headers that name (or claim to name) its tenant.
#[derive(Debug, Clone)]
struct Caller {
    /// The tenant it acts as, where it has one.
    tenant: String,
    headers: Vec<(&'static str, String)>,
}

impl Caller {
    fn nobody() -> Self {
        Caller {
            tenant: String::new(),
            headers: Vec::new(),
        }
    }

    /// A tenant named by the header, as the local stack and `AuthMode=header` trust it.
    fn header(tenant: &str) -> Self {
        Caller {
            tenant: tenant.into(),
            ..Caller::nobody().with("x-tenant-id", tenant)
        }
    }

    /// A tenant named by the `tenant_id` claim of a token `authorizer` verifies.
    fn token(authorizer: &JwtAuthorizer, tenant: &str) -> Self {
        let token = authorizer.token(&json!({ "sub": "someone", "tenant_id": tenant }));
        Caller {
            tenant: tenant.into(),
            ..Caller::bearer(&token)
        }
    }

    fn bearer(token: &str) -> Self {
        Caller::nobody().with("authorization", &format!("Bearer {token}"))
    }

    fn with(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// An answer with the header a 401 must carry.
#[derive(Debug)]
struct Reply {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
}

async fn call(
    stack: &LocalStack,
    caller: &Caller,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", stack.api_url));
    for (name, value) in &caller.headers {
        request = request.header(*name, value);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("API answers");
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is JSON: {text}"));
    Reply {
        status,
        www_authenticate,
        body,
    }
}

fn assert_unauthorized(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {:#}", reply.body);
    assert_eq!(reply.body["error"]["code"], "unauthorized", "{what}");
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{what}: a message says why");
    assert!(reply.body["error"]["details"].is_object(), "{what}");
    let challenge = reply.www_authenticate.as_deref().unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
}

/// A stack whose API Gateway stand-in plays the JWT authorizer (`AuthMode=jwt`).
async fn jwt_stack(
    name: &str,
    configure: impl FnOnce(&mut baton_local::stack::StackOptions),
) -> (LocalStack, Arc<JwtAuthorizer>) {
    let authorizer = Arc::new(JwtAuthorizer::local(b"isolation test secret"));
    let stack = start_stack(name, |s| {
        s.authorizer = Authorizer::Jwt(authorizer.clone());
        configure(s);
    })
    .await;
    (stack, authorizer)
}

fn agent_body(name: &str, endpoint: &str, capability: &str) -> Value {
    json!({ "name": name, "endpoint": endpoint, "capabilities": [capability], "timeout_ms": 5000 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokens_claim_is_the_tenant_and_the_header_counts_for_nothing() {
    let (stack, authorizer) = jwt_stack("jwt-tenant", |_| {}).await;
    let a = Caller::token(&authorizer, "acme");
    let b = Caller::token(&authorizer, "globex");
    let registered = call(
        &stack,
        &a,
        "POST",
        "/v1/agents",
        Some(&agent_body("acme-agent", "http://127.0.0.1:9/", "work")),
    )
    .await;
    assert_eq!(registered.status, 201, "{:#}", registered.body);

    let names = |reply: &Reply| -> Vec<String> {
        reply.body["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .map(|a| a["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let seen_by_a = call(&stack, &a, "GET", "/v1/agents", None).await;
    assert_eq!(names(&seen_by_a), ["acme-agent"]);
    let seen_by_b = call(&stack, &b, "GET", "/v1/agents", None).await;
    assert_eq!(seen_by_b.status, 200, "{:#}", seen_by_b.body);
    assert!(names(&seen_by_b).is_empty(), "{:#}", seen_by_b.body);

    // B's token with A's name in the header is still B.
    let b_claiming_a = b.clone().with("x-tenant-id", "acme");
    let listed = call(&stack, &b_claiming_a, "GET", "/v1/agents", None).await;
    assert!(names(&listed).is_empty(), "{:#}", listed.body);
    let read = call(&stack, &b_claiming_a, "GET", "/v1/agents/acme-agent", None).await;
    assert_eq!(read.status, 404, "{:#}", read.body);
    let written = call(
        &stack,
        &b_claiming_a,
        "POST",
        "/v1/agents",
        Some(&agent_body("globex-agent", "http://127.0.0.1:9/", "work")),
    )
    .await;
    assert_eq!(written.status, 201, "{:#}", written.body);
    assert_eq!(
        names(&call(&stack, &b, "GET", "/v1/agents", None).await),
        ["globex-agent"]
    );
    assert_eq!(
        names(&call(&stack, &a, "GET", "/v1/agents", None).await),
        ["acme-agent"]
    );

    // A Cognito-style token: the audience in client_id, groups and scopes beside the tenant.
    let cognito = authorizer.token(&json!({
        "aud": null,
        "client_id": JwtAuthorizer::LOCAL_AUDIENCE,
        "tenant_id": "acme",
        "cognito:groups": ["admins"],
        "scope": "baton/read baton/write",
    }));
    let listed = call(&stack, &Caller::bearer(&cognito), "GET", "/v1/agents", None).await;
    assert_eq!(names(&listed), ["acme-agent"]);

    // The health check is open, as the template's GET /health route has no authorizer.
    let health = call(&stack, &Caller::nobody(), "GET", "/health", None).await;
    assert_eq!(
        (health.status, &health.body),
        (200, &json!({ "status": "ok" }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_identity_get_401_and_store_nothing() {
    let (stack, authorizer) = jwt_stack("jwt-refused", |s| {
        *s = baton_local::stack::StackOptions {
            authorizer: s.authorizer.clone(),
            prefix: std::mem::take(&mut s.prefix),
            ..baton_local::stack::StackOptions::api_only("")
        }
    })
    .await;
    let now_s = now_ms() / 1000;
    let token = |claims: Value| Caller::bearer(&authorizer.token(&claims));
    let forger = JwtAuthorizer::local(b"not the stack's secret");
    let cases: Vec<(&str, Caller)> = vec![
        ("no token", Caller::nobody()),
        ("X-Tenant-Id without a token", Caller::header("acme")),
        (
            "an empty bearer",
            Caller::nobody().with("authorization", "Bearer "),
        ),
        (
            "another scheme",
            Caller::nobody().with("authorization", "Basic YWNtZTphY21l"),
        ),
        ("not a JWT", Caller::bearer("not.a.jwt")),
        (
            "an expired token",
            token(json!({ "tenant_id": "acme", "exp": now_s - 600 })),
        ),
        (
            "a token not valid yet",
            token(json!({ "tenant_id": "acme", "nbf": now_s + 600 })),
        ),
        (
            "a token without exp",
            token(json!({ "tenant_id": "acme", "exp": null })),
        ),
        (
            "a wrong audience",
            token(json!({ "tenant_id": "acme", "aud": "someone-else" })),
        ),
        (
            "no audience",
            token(json!({ "tenant_id": "acme", "aud": null })),
        ),
        (
            "a wrong issuer",
            token(json!({ "tenant_id": "acme", "iss": "https://evil.example/" })),
        ),
        (
            "a bad signature",
            Caller::bearer(&forger.token(&json!({ "tenant_id": "acme" }))),
        ),
        ("a token without the claim", token(json!({ "sub": "u1" }))),
        (
            "a token without the claim, and the header",
            token(json!({ "sub": "u1" })).with("x-tenant-id", "acme"),
        ),
        (
            "a claim that is not a tenant id",
            token(json!({ "tenant_id": "acme/../globex" })),
        ),
        (
            "a claim that is not a string",
            token(json!({ "tenant_id": { "name": "acme" } })),
        ),
    ];
    let body = agent_body("intruder", "http://127.0.0.1:9/", "work");
    for (what, caller) in &cases {
        let registered = call(&stack, caller, "POST", "/v1/agents", Some(&body)).await;
        assert_unauthorized(&registered, what);
        let listed = call(&stack, caller, "GET", "/v1/agents", None).await;
        assert_unauthorized(&listed, what);
    }
    assert_eq!(
        state_items(&stack).await,
        0,
        "a refused request stores nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_mode_trusts_x_tenant_id_and_refuses_a_request_without_one() {
    let stack = api_only_stack("header-mode").await;
    let registered = call(
        &stack,
        &Caller::header("acme"),
        "POST",
        "/v1/agents",
        Some(&agent_body("acme-agent", "http://127.0.0.1:9/", "work")),
    )
    .await;
    assert_eq!(registered.status, 201, "{:#}", registered.body);
    let as_acme = call(
        &stack,
        &Caller::header("acme"),
        "GET",
        "/v1/agents/acme-agent",
        None,
    )
    .await;
    assert_eq!(as_acme.status, 200, "{:#}", as_acme.body);
    let as_default = call(
        &stack,
        &Caller::header("default"),
        "GET",
        "/v1/agents/acme-agent",
        None,
    )
    .await;
    assert_eq!(as_default.status, 404, "{:#}", as_default.body);
    // Without the header there is no tenant: refused, not answered as `default`'s.
    for (method, path) in [
        ("GET", "/v1/agents/acme-agent"),
        ("GET", "/v1/agents"),
        ("POST", "/v1/workflows"),
    ] {
        let nobody = call(&stack, &Caller::nobody(), method, path, None).await;
        assert_eq!(nobody.status, 401, "{method} {path}: {:#}", nobody.body);
        assert_eq!(nobody.body["error"]["code"], "unauthorized");
    }
    // A token means nothing to a stack without an authorizer: without the header, no tenant.
    let authorizer = JwtAuthorizer::local(b"unused");
    let with_token = call(
        &stack,
        &Caller::token(&authorizer, "acme"),
        "GET",
        "/v1/agents/acme-agent",
        None,
    )
    .await;
    assert_eq!(with_token.status, 401, "{:#}", with_token.body);
    let malformed = call(
        &stack,
        &Caller::header("not a tenant"),
        "GET",
        "/v1/agents",
        None,
    )
    .await;
    assert_eq!(malformed.status, 400, "{:#}", malformed.body);
    assert_eq!(malformed.body["error"]["details"]["header"], "x-tenant-id");
}

/// The ids of tenant A's things a probe names, or of things that exist nowhere.
struct Ids {
    agent: String,
    capability: String,
    workflow: String,
    session: String,
}

impl Ids {
    fn fill(&self, template: &str) -> String {
        template
            .replace("{agent}", &self.agent)
            .replace("{capability}", &self.capability)
            .replace("{workflow}", &self.workflow)
            .replace("{session}", &self.session)
    }

    /// `value` with every id and `tenant` in its strings replaced by a placeholder, and
    /// without the fields that differ from one request to the next (times).
    fn normalize(&self, value: &Value, tenant: &str) -> Value {
        match value {
            Value::String(text) => Value::String(
                text.replace(&self.workflow, "{workflow}")
                    .replace(&self.session, "{session}")
                    .replace(&self.agent, "{agent}")
                    .replace(&self.capability, "{capability}")
                    .replace(tenant, "{tenant}"),
            ),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.normalize(v, tenant)).collect())
            }
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    // Times differ per request; queue depths are the deployment's, shared by
                    // every tenant, and move with the traffic.
                    .filter(|(k, _)| {
                        !k.ends_with("_at")
                            && !k.ends_with("_ms")
                            && !["timing_metrics", "as_of", "queues"].contains(&k.as_str())
                    })
                    .map(|(k, v)| (k.clone(), self.normalize(v, tenant)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// One request of tenant B's: `{agent}`, `{capability}`, `{workflow}` and `{session}` in
/// its path and body stand for the ids.
struct Probe {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    if_match: Option<&'static str>,
}

const fn probe(method: &'static str, path: &'static str) -> Probe {
    Probe {
        method,
        path,
        body: None,
        if_match: None,
    }
}

impl Probe {
    const fn body(self, body: &'static str) -> Probe {
        Probe {
            body: Some(body),
            ..self
        }
    }

    const fn if_match(self, etag: &'static str) -> Probe {
        Probe {
            if_match: Some(etag),
            ..self
        }
    }
}

const AGENT_BODY: &str =
    r#"{"name":"{agent}","endpoint":"http://127.0.0.1:9/b","capabilities":["{capability}"]}"#;

/// Every request of the API that names a tenant's thing or reads a tenant's lists. A route
/// that does not exist yet answers alike for every id, and is checked for real once it does.
///
/// The order matters at the end: the creations make the caller's own agent and session under
/// the names they are given, which later probes would find.
const PROBES: &[Probe] = &[
    // Agents.
    probe("GET", "/v1/agents"),
    probe("GET", "/v1/agents/{agent}"),
    probe("GET", "/v1/agents/categories"),
    probe("GET", "/v1/agents/health"),
    probe("GET", "/v1/agents?capability={capability}"),
    probe("PATCH", "/v1/agents/{agent}").body(r#"{"timeout_ms":1000}"#),
    probe("PATCH", "/v1/agents/{agent}")
        .body(r#"{"timeout_ms":1000}"#)
        .if_match("\"1\""),
    probe("PATCH", "/v1/agents/{agent}")
        .body(r#"{"enabled":false}"#)
        .if_match("*"),
    probe("PUT", "/v1/agents/{agent}")
        .body(AGENT_BODY)
        .if_match("\"1\""),
    probe("POST", "/v1/agents/{agent}/disable"),
    probe("POST", "/v1/agents/{agent}/enable").if_match("\"1\""),
    probe("DELETE", "/v1/agents/{agent}").if_match("\"1\""),
    probe("DELETE", "/v1/agents/{agent}"),
    // Workflows.
    probe("GET", "/v1/workflows?status=succeeded"),
    probe("GET", "/v1/workflows/{workflow}"),
    probe("GET", "/v1/workflows/{workflow}/plan"),
    probe("GET", "/v1/workflows/{workflow}/history"),
    probe("GET", "/v1/workflows/{workflow}/graph"),
    probe("GET", "/v1/workflows/{workflow}/tasks/work"),
    probe("POST", "/v1/workflows/{workflow}/cancel").body(r#"{"force":true}"#),
    probe("POST", "/v1/workflows/{workflow}/pause"),
    probe("POST", "/v1/workflows/{workflow}/resume"),
    probe("POST", "/v1/workflows/{workflow}/retry"),
    // Sessions and turns.
    probe("GET", "/v1/sessions/{session}"),
    probe("GET", "/v1/sessions/{session}/turns/1"),
    probe("POST", "/v1/sessions/{session}/messages").body(r#"{"text":"what did A say?"}"#),
    probe("POST", "/v1/sessions/{session}/resume").body(r#"{"reply":"go on"}"#),
    probe("DELETE", "/v1/sessions/{session}"),
    // Routing settings and learning.
    probe("GET", "/v1/capabilities"),
    probe("GET", "/v1/capabilities/{capability}"),
    probe("PUT", "/v1/capabilities/{capability}").body(r#"{"routing":"random"}"#),
    probe("GET", "/v1/priorities"),
    probe("PUT", "/v1/priorities").body(r#"{"multipliers":{"isolation":3.0}}"#),
    probe("GET", "/v1/stats"),
    // Creations under A's names: the caller's own, never a conflict with A's.
    probe("PUT", "/v1/agents/{agent}").body(AGENT_BODY),
    probe("POST", "/v1/agents").body(AGENT_BODY),
    probe("POST", "/orchestrate").body(r#"{"text":"hello","conversation_id":"{session}"}"#),
];

/// What tenant A can read of its own things, to compare before and after B's probes.
const A_VIEWS: &[&str] = &[
    "/v1/agents",
    "/v1/agents/{agent}",
    "/v1/agents/{agent}-core",
    "/v1/workflows/{workflow}",
    "/v1/workflows/{workflow}/plan",
    "/v1/sessions/{session}",
    "/v1/sessions/{session}/turns/1",
    "/v1/capabilities",
    "/v1/capabilities/{capability}",
    "/v1/priorities",
];

async fn a_views(stack: &LocalStack, a: &Caller, ids: &Ids) -> Vec<(String, u16, Value)> {
    let mut views = Vec::new();
    for path in A_VIEWS {
        let path = ids.fill(path);
        let reply = call(stack, a, "GET", &path, None).await;
        assert_eq!(reply.status, 200, "A reads {path}: {:#}", reply.body);
        views.push((path, reply.status, reply.body));
    }
    views
}

/// Tenant A registers agents, sets routing defaults and priorities, runs a workflow to its
/// end and a conversation turn. Then tenant B tries every probe on A's ids, and each answer
/// must be exactly what a tenant C that never saw A gets for ids that exist nowhere. A's
/// things are unchanged afterwards, and A's session still works.
async fn tenants_are_isolated(stack: &LocalStack, a: &Caller, b: &Caller, c: &Caller) {
    let worker = agent_replying(AgentReply::ok(json!({ "done": true }))).await;
    let core = agent(Arc::new(|call: &Value| {
        let text = call
            .pointer("/input/text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        AgentReply::ok(json!({ "response": format!("A's core heard `{text}`") }))
    }))
    .await;
    let ids = Ids {
        agent: "iso-agent-a".into(),
        capability: "iso.work.a".into(),
        workflow: String::new(),
        session: String::new(),
    };
    let ok = |reply: Reply, status: u16, what: &str| -> Value {
        assert_eq!(reply.status, status, "{what}: {:#}", reply.body);
        reply.body
    };
    ok(
        call(
            stack,
            a,
            "POST",
            "/v1/agents",
            Some(&agent_body(&ids.agent, &worker.url, &ids.capability)),
        )
        .await,
        201,
        "A registers its worker",
    );
    let mut core_body = agent_body(
        &format!("{}-core", ids.agent),
        &core.url,
        "conversation.iso",
    );
    core_body["conversation"] = json!({ "role": "core" });
    ok(
        call(stack, a, "POST", "/v1/agents", Some(&core_body)).await,
        201,
        "A registers its core agent",
    );
    let path = format!("/v1/capabilities/{}", ids.capability);
    ok(
        call(
            stack,
            a,
            "PUT",
            &path,
            Some(&json!({ "routing": "round_robin" })),
        )
        .await,
        200,
        "A's routing default",
    );
    let multipliers = json!({ "multipliers": { "isolation": 2.0 } });
    ok(
        call(stack, a, "PUT", "/v1/priorities", Some(&multipliers)).await,
        200,
        "A's priorities",
    );

    let workflow = json!({ "name": "A's work", "tasks": [
        { "id": "work", "capability": ids.capability, "input": { "text": "secret of A" } }
    ] });
    let accepted = ok(
        call(stack, a, "POST", "/v1/workflows", Some(&workflow)).await,
        202,
        "A submits",
    );
    let workflow_id = accepted["workflow_id"]
        .as_str()
        .expect("workflow_id")
        .to_string();
    let path = format!("/v1/workflows/{workflow_id}");
    let finished = eventually("A's workflow finishes", || async {
        let view = call(stack, a, "GET", &path, None).await;
        (view.status == 200 && view.body["status"] != "running").then_some(view.body)
    })
    .await;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");

    let opened = ok(
        call(stack, a, "POST", "/v1/sessions", Some(&json!({}))).await,
        201,
        "A opens a session",
    );
    let session_id = opened["session_id"]
        .as_str()
        .expect("session_id")
        .to_string();
    let path = format!("/v1/sessions/{session_id}/messages");
    let answered = ok(
        call(stack, a, "POST", &path, Some(&json!({ "text": "first" }))).await,
        200,
        "A's turn",
    );
    assert_eq!(answered["status"], "answered", "{answered:#}");
    let ids = Ids {
        workflow: workflow_id,
        session: session_id,
        ..ids
    };
    let before = a_views(stack, a, &ids).await;

    let nowhere = Ids {
        agent: "iso-agent-none".into(),
        capability: "iso.work.none".into(),
        workflow: "0190aaaa-0000-7000-8000-00000000dead".into(),
        session: "0190aaaa-0000-7000-8000-00000000beef".parse().unwrap(),
    };
    for probe in PROBES {
        let request = |caller: &Caller, ids: &Ids| {
            let body = probe
                .body
                .map(|b| serde_json::from_str::<Value>(&ids.fill(b)).expect("probe body"));
            let caller = match probe.if_match {
                Some(etag) => caller.clone().with("if-match", etag),
                None => caller.clone(),
            };
            (caller, ids.fill(probe.path), body)
        };
        let method = probe.method;
        let (caller, a_path, a_body) = request(b, &ids);
        let by_b = call(stack, &caller, method, &a_path, a_body.as_ref()).await;
        let (caller, none_path, none_body) = request(c, &nowhere);
        let by_c = call(stack, &caller, method, &none_path, none_body.as_ref()).await;
        eprintln!("B {method} {a_path}: {} {}", by_b.status, by_b.body);
        assert!(by_b.status < 500, "{method} {a_path}: {:#}", by_b.body);
        assert_eq!(
            (by_b.status, ids.normalize(&by_b.body, &b.tenant)),
            (by_c.status, nowhere.normalize(&by_c.body, &c.tenant)),
            "B's {method} {a_path} must answer as for something that exists nowhere"
        );
    }

    let after = a_views(stack, a, &ids).await;
    for ((path, _, was), (_, _, is)) in before.iter().zip(&after) {
        assert_eq!(was, is, "A's {path} changed while B probed");
    }
    let path = format!("/v1/sessions/{}/messages", ids.session);
    let second = ok(
        call(stack, a, "POST", &path, Some(&json!({ "text": "second" }))).await,
        200,
        "A's next turn",
    );
    assert_eq!(second["turn"], 2, "{second:#}");
    assert_eq!(second["response"], "A's core heard `second`", "{second:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_from_tokens_see_and_touch_nothing_of_each_other() {
    // Learning is off so that A's views do not change on their own while B probes.
    let (stack, authorizer) = jwt_stack("iso-jwt", |s| s.run_learn = false).await;
    let a = Caller::token(&authorizer, "acme");
    // B's requests also name A in the header, which must count for nothing.
    let b = Caller::token(&authorizer, "globex").with("x-tenant-id", "acme");
    let c = Caller::token(&authorizer, "initech").with("x-tenant-id", "acme");
    tenants_are_isolated(&stack, &a, &b, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_from_the_header_see_and_touch_nothing_of_each_other() {
    let stack = start_stack("iso-header", |s| s.run_learn = false).await;
    let (a, b, c) = (
        Caller::header("acme"),
        Caller::header("globex"),
        Caller::header("initech"),
    );
    tenants_are_isolated(&stack, &a, &b, &c).await;
}
