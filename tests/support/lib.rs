//! Test support: one emulator per test binary, one local stack per test, and small helpers to
//! talk to the API, the queues and the tables.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::Message;
use baton_chain::store::LearningStore;
use baton_local::agents::{AgentReply, AgentServer, Behaviour};
use baton_local::emulator::Emulator;
use baton_local::project_root;
use baton_local::stack::{LocalStack, StackOptions};
use baton_types::learning::AgentStats;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

pub use baton_local::agents::examples;

/// The emulator shared by every test of this binary. It stops when the binary exits.
pub fn emulator_endpoint() -> &'static str {
    static EMULATOR: OnceLock<Emulator> = OnceLock::new();
    EMULATOR
        .get_or_init(|| Emulator::start(&project_root()).expect("emulator (run infra/test.sh)"))
        .endpoint()
}

/// A stack with only the API and its own tables and queues, to drive handlers by hand.
pub async fn api_only_stack(name: &str) -> LocalStack {
    start_stack(name, |s| {
        *s = StackOptions {
            prefix: std::mem::take(&mut s.prefix),
            ..StackOptions::api_only("")
        }
    })
    .await
}

/// Recovery times short enough that a stack under faults recovers within a test, not
/// 15 minutes later: a sweep every half second and second-long dispatch, repair and lease
/// margins.
pub fn recover_quickly(options: &mut StackOptions) {
    options.sweep_every = Some(Duration::from_millis(500));
    for (name, value) in [
        ("DISPATCH_TIMEOUT_SECONDS", "5"),
        ("REPAIR_AFTER_SECONDS", "3"),
        ("LEASE_MARGIN_SECONDS", "2"),
    ] {
        options.env_overrides.insert(name.into(), value.into());
    }
}

/// A stack with its own tables and queues; `configure` may turn event sources off.
pub async fn start_stack(name: &str, configure: impl FnOnce(&mut StackOptions)) -> LocalStack {
    // The handlers' logs, shown by the test harness when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,aws_smithy_runtime=error,aws_config=error".into()),
        )
        .with_test_writer()
        .try_init();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "t{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut options = StackOptions::new(prefix);
    options.sweep_every = Some(Duration::ZERO);
    configure(&mut options);
    LocalStack::start_on_emulator(emulator_endpoint(), options)
        .await
        .expect("local stack starts")
}

/// An agent whose every call gets `reply`.
pub async fn agent_replying(reply: AgentReply) -> AgentServer {
    let behaviour: Behaviour = std::sync::Arc::new(move |_| reply.clone());
    AgentServer::start(behaviour).await.expect("agent starts")
}

pub async fn agent(behaviour: Behaviour) -> AgentServer {
    AgentServer::start(behaviour).await.expect("agent starts")
}

/// An agent that answers `replies` in order, then `then` to every later call.
pub async fn agent_scripted(replies: Vec<AgentReply>, then: AgentReply) -> AgentServer {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let behaviour: Behaviour = std::sync::Arc::new(move |_| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        replies.get(n).cloned().unwrap_or_else(|| then.clone())
    });
    agent(behaviour).await
}

/// Registers an agent from its whole registration body (as `tenant` default).
pub async fn register(stack: &LocalStack, body: Value) {
    let answer = post(stack, "/v1/agents", &body.to_string()).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
}

/// The API's view of one agent.
pub async fn agent_view(stack: &LocalStack, name: &str) -> Value {
    let answer = get(stack, &format!("/v1/agents/{name}")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body
}

/// The API's view of one workflow.
pub async fn workflow_view(stack: &LocalStack, id: &str) -> Value {
    let answer = get(stack, &format!("/v1/workflows/{id}")).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body
}

/// Claims `task` for `worker` straight in the store, as a handler that then dies: the task as
/// claimed. Its claim asks for a lease that has already run out, so the task holds the
/// dispatch lease it kept; the sweep finds it expired at [`lease_end`].
pub async fn claim_and_die(
    stack: &LocalStack,
    task: &baton_types::messages::TaskRef,
) -> baton_types::records::TaskRecord {
    use baton_chain::store::{ClaimOutcome, WorkflowStore};
    let now = baton_types::clock::now_ms();
    let claimed = stack
        .execute_deps()
        .store
        .claim_task(task, &"worker".parse().unwrap(), None, "died", now - 1, now)
        .await
        .expect("claim");
    match claimed {
        ClaimOutcome::Claimed(record) => record,
        other => panic!("not claimed: {other:?}"),
    }
}

/// Just after a claimed task's lease runs out.
pub fn lease_end(claimed: &baton_types::records::TaskRecord) -> i64 {
    claimed
        .lease_until_ms
        .expect("a claimed task holds a lease")
        + 1
}

/// What a handler that claimed `task` for `worker` and recorded `end` wrote, straight to the
/// store, as if it then died before anything else: the claim and the ended attempt.
pub async fn claim_and_record(
    stack: &LocalStack,
    task: &baton_types::messages::TaskRef,
    end: baton_chain::store::AttemptEnd,
) -> baton_chain::store::Ended {
    use baton_chain::store::{AttemptEnd, AttemptHolder, WorkflowStore};
    use baton_types::task::{AttemptOutcome, AttemptRecord};
    let store = &stack.execute_deps().store;
    let now = baton_types::clock::now_ms();
    store
        .claim_task(
            task,
            &"worker".parse().unwrap(),
            None,
            "died",
            now + 60_000,
            now,
        )
        .await
        .expect("claim");
    let (outcome, error) = match &end {
        AttemptEnd::Failed(failure) => (AttemptOutcome::Failed, Some(failure.clone())),
        _ => (AttemptOutcome::Succeeded, None),
    };
    let entry = AttemptRecord {
        attempt: task.attempt,
        agent: Some("worker".parse().unwrap()),
        started_at_ms: Some(now),
        finished_at_ms: now,
        outcome,
        error,
        claims: 1,
        retry_delay_ms: None,
        call_ms: None,
        usage: None,
        late: false,
    };
    let finish = baton_chain::finish::finish_at(&stack.settings, now);
    store
        .end_attempt(task, AttemptHolder::Claim("died"), &end, &entry, finish)
        .await
        .expect("end the attempt")
}

/// Every item of the stack's state table (tests use small tables).
pub async fn state_table(
    stack: &LocalStack,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let out = stack
        .clients
        .dynamodb
        .scan()
        .table_name(&stack.settings.state_table)
        .send()
        .await
        .expect("scan");
    out.items.unwrap_or_default()
}

/// Runs one cleanup sweep as of `now_ms`, as the schedule would.
pub async fn sweep_at(stack: &LocalStack, now_ms: i64) -> baton_cleanup::SweepReport {
    baton_cleanup::sweep(stack.cleanup_deps(), now_ms).await
}

/// A time past the moment the scheduled repair looks at a workflow created now.
pub fn after_repair_delay(stack: &LocalStack) -> i64 {
    baton_types::clock::now_ms() + stack.settings.repair_after.as_millis() as i64 + 15_000
}

/// Asserts what a reader must always see: a finished workflow has no unfinished task.
pub fn assert_consistent(workflow: &Value) {
    if !is_unfinished(workflow) {
        for t in workflow["tasks"].as_array().expect("tasks") {
            let status = t["status"].as_str().unwrap_or("?");
            assert!(
                ["succeeded", "failed", "skipped", "cancelled"].contains(&status),
                "workflow {} reads {} with task {} {status}: {workflow:#}",
                workflow["workflow_id"],
                workflow["status"],
                t["id"]
            );
        }
    }
}

/// Whether a workflow view shows it still running (maybe paused or being cancelled).
pub fn is_unfinished(workflow: &Value) -> bool {
    ["running", "paused", "cancelling"].contains(&workflow["status"].as_str().unwrap_or(""))
}

/// An HTTP answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

pub async fn post(stack: &LocalStack, path: &str, body: &str) -> Answer {
    request(stack, reqwest::Method::POST, path, Some(body), None).await
}

pub async fn get(stack: &LocalStack, path: &str) -> Answer {
    request(stack, reqwest::Method::GET, path, None, None).await
}

/// Any request, as `tenant` (the `X-Tenant-Id` header; the local tenant `default` if None).
pub async fn request(
    stack: &LocalStack,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
    tenant: Option<&str>,
) -> Answer {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", stack.api_url));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    request = request.header("x-tenant-id", tenant.unwrap_or(baton_local::LOCAL_TENANT));
    answer(request.send().await.expect("API answers")).await
}

/// A request with a JSON body and headers of its own (`If-Match`, say).
pub async fn request_with(
    stack: &LocalStack,
    method: reqwest::Method,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", stack.api_url))
        .json(&body);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("x-tenant-id"))
    {
        request = request.header("x-tenant-id", baton_local::LOCAL_TENANT);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    answer(request.send().await.expect("API answers")).await
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is JSON: {text}"));
    Answer { status, body }
}

pub async fn register_agent(
    stack: &LocalStack,
    name: &str,
    server: &AgentServer,
    capabilities: &[&str],
) {
    let body = json!({ "name": name, "endpoint": server.url, "capabilities": capabilities, "timeout_ms": 5000 });
    let answer = post(stack, "/v1/agents", &body.to_string()).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
}

/// An agent URL on a port that refuses every connection and stays reserved while this lives:
/// a server started and then dropped would free its port for another test's server to take.
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    pub url: String,
}

impl ClosedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let port = socket.local_addr().expect("address").port();
        ClosedPort {
            _socket: socket,
            url: format!("http://127.0.0.1:{port}/"),
        }
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers an http agent at `url` (as `register_agent` does for a server).
pub async fn register_url(stack: &LocalStack, name: &str, url: &str, capabilities: &[&str]) {
    let body =
        json!({ "name": name, "endpoint": url, "capabilities": capabilities, "timeout_ms": 5000 });
    let answer = post(stack, "/v1/agents", &body.to_string()).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
}

/// Submits a workflow and returns its id.
pub async fn submit(stack: &LocalStack, workflow: &Value) -> String {
    let answer = post(stack, "/v1/workflows", &workflow.to_string()).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    answer.body["workflow_id"]
        .as_str()
        .expect("workflow_id")
        .to_string()
}

/// Polls until the workflow leaves `running`. The bound only keeps a broken build from
/// hanging the suite; no test asserts on time.
pub async fn wait_until_finished(stack: &LocalStack, id: &str) -> Value {
    for _ in 0..1200 {
        let view = get(stack, &format!("/v1/workflows/{id}")).await;
        // `unavailable` is transient (the emulator is down in fault tests): a client retries.
        if view.status == 503 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(view.status, 200, "{:?}", view.body);
        assert_consistent(&view.body);
        if !is_unfinished(&view.body) {
            return view.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = get(stack, &format!("/v1/workflows/{id}")).await;
    panic!("workflow {id} never finished: {:#}", view.body);
}

/// Polls `probe` until it returns Some, with the same liveness bound.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..1200 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

/// Receives exactly the next message of a queue of the stack, waiting for it to arrive.
pub async fn receive_one(stack: &LocalStack, queue: &str) -> Message {
    let url = stack.queue_url(queue).expect("queue exists").to_string();
    let sqs = stack.clients.sqs.clone();
    eventually(&format!("a message on {queue}"), || {
        let (sqs, url) = (sqs.clone(), url.clone());
        async move {
            let out = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(1)
                .wait_time_seconds(1)
                .send()
                .await
                .ok()?;
            out.messages?.into_iter().next()
        }
    })
    .await
}

/// Number of messages a queue holds (visible or in flight).
pub async fn queue_depth(stack: &LocalStack, queue: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = stack
        .clients
        .sqs
        .get_queue_attributes()
        .queue_url(stack.queue_url(queue).expect("queue exists"))
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes");
    let attributes = out.attributes.unwrap_or_default();
    [
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .filter_map(|a| attributes.get(a)?.parse::<u64>().ok())
    .sum()
}

/// The Lambda event SQS would deliver for `messages`.
pub fn sqs_event(messages: &[&Message]) -> LambdaEvent<SqsEvent> {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes
                .iter()
                .flatten()
                .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                .collect();
            json!({ "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                    "attributes": attributes, "eventSource": "aws:sqs" })
        })
        .collect();
    let event = serde_json::from_value(json!({ "Records": records })).expect("SQS event");
    LambdaEvent::new(event, Context::default())
}

/// How many items the stack's state table holds.
pub async fn state_items(stack: &LocalStack) -> usize {
    state_table(stack).await.len()
}

/// The diamond: a → {b, c} → d.
pub fn diamond(capability: &str) -> Value {
    json!({
        "name": "diamond",
        "tasks": [
            { "id": "a", "capability": capability, "input": { "text": "hello agents" } },
            { "id": "b", "capability": capability, "depends_on": ["a"] },
            { "id": "c", "capability": capability, "depends_on": ["a"] },
            { "id": "d", "capability": capability, "depends_on": ["b", "c"] }
        ]
    })
}

pub fn task<'a>(workflow: &'a Value, id: &str) -> &'a Value {
    workflow["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["id"] == id))
        .unwrap_or_else(|| panic!("task {id} in {workflow}"))
}

/// What the learner knows of `agent` on `task_type`, once it has seen `count` outcomes.
pub async fn learned_stats(
    stack: &LocalStack,
    agent: &str,
    task_type: &str,
    count: u64,
) -> AgentStats {
    let store = &stack.learn_deps().store;
    eventually(
        &format!("{count} outcomes of {agent} learned"),
        || async move {
            let mut stats = store
                .agent_stats(
                    &"default".parse().unwrap(),
                    task_type,
                    &[agent.parse().unwrap()],
                )
                .await
                .ok()?;
            stats.remove(agent).filter(|s| s.count >= count)
        },
    )
    .await
}

/// Every item of a table of the stack, read page by page (items of a few hundred KB fill a
/// page of `Scan` quickly; `state_table` reads only the first).
pub async fn table_items(
    stack: &LocalStack,
    table: &str,
) -> Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = stack
            .clients
            .dynamodb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(out.items.unwrap_or_default());
        start = out.last_evaluated_key;
        if start.is_none() {
            return items;
        }
    }
}

/// The keys (`pk`, `sk`) of every item of the stack's state table: what a refused request
/// must leave as it found it.
pub async fn state_keys(stack: &LocalStack) -> std::collections::BTreeSet<(String, String)> {
    let text =
        |item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
         name: &str| {
            item.get(name)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
    table_items(stack, &stack.settings.state_table)
        .await
        .iter()
        .map(|item| (text(item, "pk"), text(item, "sk")))
        .collect()
}

/// An agent that holds every call until the test opens its gate.
pub struct GatedAgent {
    pub url: String,
    gate: tokio::sync::watch::Sender<bool>,
}

impl GatedAgent {
    pub async fn start() -> Self {
        Self::replying(json!({ "done": true })).await
    }

    /// One whose every call, once the gate opens, gets `reply` as its JSON body.
    pub async fn replying(reply: Value) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let (gate, opened) = tokio::sync::watch::channel(false);
        let app = axum::Router::new().fallback(move || {
            let mut opened = opened.clone();
            let reply = reply.clone();
            async move {
                let _ = opened.wait_for(|open| *open).await;
                axum::Json(reply.clone())
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GatedAgent { url, gate }
    }

    pub fn open(&self) {
        let _ = self.gate.send(true);
    }
}
