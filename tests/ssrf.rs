//! Endpoint safety on the local stack, with real servers: registration refuses endpoints that
//! lead to metadata services, private networks or other schemes, and stores nothing; a call
//! never follows a redirect; and a host that resolves somewhere refused is not called.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use baton_aws::invoker::HttpAgentInvoker;
use baton_aws::prober::HttpHealthProber;
use baton_chain::invoker::{AgentCall, AgentInvoker};
use baton_chain::prober::HealthProber;
use baton_local::agents::AgentReply;
use baton_tests::*;
use baton_types::agent::AgentRegistration;
use baton_types::endpoint::{EndpointPolicy, HTTP_HOSTS_VAR, PRIVATE_NETWORKS_VAR};
use baton_types::health::ProbeResult;
use baton_types::messages::TaskRef;
use baton_types::outcome::FailureKind;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A real server that only counts the connections made to it: a redirect's target, or a
/// host Baton must not reach. Any connection at all is a call Baton should not have made.
struct CountingServer {
    port: u16,
    connections: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl CountingServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        CountingServer {
            port,
            connections,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for CountingServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The default deployment's policy: https only, public addresses only.
fn strict(options: &mut baton_local::stack::StackOptions) {
    options
        .env_overrides
        .insert(HTTP_HOSTS_VAR.into(), String::new());
    options
        .env_overrides
        .insert(PRIVATE_NETWORKS_VAR.into(), String::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registration_refuses_every_probe_endpoint_and_stores_nothing() {
    let stack = start_stack("ssrf-probes", strict).await;
    let listening = CountingServer::start().await;
    let huge = format!("https://agents.example.com/{}", "a".repeat(100 * 1024));
    let probes = [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "https://169.254.169.254/latest/meta-data/".into(),
        "http://[fd00:ec2::254]/".into(),
        "http://metadata.google.internal/".into(),
        "https://metadata.google.internal/computeMetadata/v1/".into(),
        "http://0.0.0.0:22/".into(),
        "http://2852039166/".into(),
        "http://0xa9fea9fe/".into(),
        "http://0251.0376.0251.0376/".into(),
        "http://[::ffff:169.254.169.254]/".into(),
        "http://[::]/".into(),
        "http://localhost/".into(),
        "http://10.0.0.1/".into(),
        "https://192.168.1.1/".into(),
        "file:///etc/passwd".into(),
        "gopher://x/".into(),
        "ftp://x/".into(),
        huge,
        "https://user:pass@example.com/".into(),
        "https:///".into(),
        // Names resolved at registration: loopback without the allow-list, and no address.
        "https://localhost/".into(),
        format!("https://localhost:{}/", listening.port),
        "https://nowhere.invalid/".into(),
    ];
    for (i, probe) in probes.iter().enumerate() {
        let name = format!("probe-{i}");
        let body = json!({ "name": name, "endpoint": probe, "capabilities": ["work"] });
        let answer = post(&stack, "/v1/agents", &body.to_string()).await;
        let shown: String = probe.chars().take(60).collect();
        assert!(
            (400..500).contains(&answer.status),
            "{shown}: {} {:?}",
            answer.status,
            answer.body
        );
        assert_eq!(answer.body["error"]["code"], "invalid_request", "{shown}");
        assert_eq!(
            answer.body["error"]["details"]["field"], "endpoint",
            "{shown}"
        );
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("endpoint"), "{shown}: {message}");
        let stored = get(&stack, &format!("/v1/agents/{name}")).await;
        assert_eq!(stored.status, 404, "{shown} was stored: {:?}", stored.body);
    }
    assert_eq!(
        listening.connections(),
        0,
        "registration connected to an agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_fail_the_task_and_their_target_is_never_called() {
    let stack = start_stack("ssrf-redirects", |_| {}).await;
    let target = CountingServer::start().await;
    let found =
        agent_replying(AgentReply::error(302, "moved").with_header("location", target.url())).await;
    let temporary =
        agent_replying(AgentReply::error(307, "moved").with_header("location", target.url())).await;
    register_agent(&stack, "found", &found, &["hop-302"]).await;
    register_agent(&stack, "temporary", &temporary, &["hop-307"]).await;
    let id = submit(
        &stack,
        &json!({ "name": "redirected", "tasks": [
            { "id": "a", "capability": "hop-302", "input": { "x": 1 } },
            { "id": "b", "capability": "hop-307", "input": { "x": 2 } }
        ]}),
    )
    .await;
    let workflow = wait_until_finished(&stack, &id).await;
    assert_eq!(workflow["status"], "failed", "{workflow:#}");
    for (task_id, status) in [("a", 302), ("b", 307)] {
        let task = task(&workflow, task_id);
        assert_eq!(task["status"], "failed", "{task:#}");
        let error = &task["error"];
        assert_eq!(error["kind"], "http_status", "{error:#}");
        assert_eq!(error["http_status"], status, "{error:#}");
        assert_eq!(error["retryable"], false, "{error:#}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "answered {status} with a redirect to {}",
                target.url()
            )) && message.contains("Baton does not follow redirects"),
            "{message}"
        );
    }
    assert_eq!(found.calls().len(), 1, "a redirect is final, not retried");
    assert_eq!(
        temporary.calls().len(),
        1,
        "a redirect is final, not retried"
    );
    assert_eq!(target.connections(), 0, "the redirect's target was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_that_resolves_to_a_refused_address_is_not_called() {
    let server = CountingServer::start().await;
    // Plain http to `localhost` is allowed, loopback addresses are not: the name passes the
    // URL's rules and only the resolver, at call time, can see where it leads.
    let policy = EndpointPolicy {
        http_hosts: vec!["localhost".into()],
        private_networks: Vec::new(),
        allow_loopback: false,
    };
    let endpoint = format!("http://localhost:{}/", server.port);
    let agent = AgentRegistration::http("rebound", &endpoint, &["work"])
        .into_agent(0)
        .expect("a well-formed registration");
    let task = TaskRef {
        tenant: "default".parse().unwrap(),
        workflow_id: "w".parse().unwrap(),
        task_id: "t".parse().unwrap(),
        attempt: 1,
    };
    let input = json!({});
    let call = AgentCall {
        task: &task,
        workflow_id: &task.workflow_id,
        task_id: &task.task_id,
        attempt: 1,
        capability: "work",
        input: &input,
        dependencies: Default::default(),
        memories: Vec::new(),
        context: None,
        timeout_ms: 5_000,
        stream: None,
    };
    let invoker = HttpAgentInvoker::new(&policy).expect("client");
    let failure = invoker.invoke(&agent, &call).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::ForbiddenEndpoint, "{failure:?}");
    assert!(!failure.retryable);
    assert!(
        failure.message.contains("`localhost` resolves to")
            && failure.message.contains("a loopback address"),
        "{}",
        failure.message
    );

    let prober = HttpHealthProber::new(&policy).expect("client");
    match prober.probe(&format!("{endpoint}health")).await {
        ProbeResult::Failed { detail } => assert!(detail.contains("refused"), "{detail}"),
        other => panic!("the probe reached a refused address: {other:?}"),
    }
    // A literal loopback address is refused before any connection, too.
    let literal = AgentRegistration::http("literal", &server.url(), &["work"])
        .into_agent(0)
        .expect("a well-formed registration");
    let failure = invoker.invoke(&literal, &call).await.unwrap_err();
    assert_eq!(failure.kind, FailureKind::ForbiddenEndpoint, "{failure:?}");
    assert_eq!(server.connections(), 0, "a refused host was connected to");

    // The same server is reachable where the policy allows loopback, so the refusals above
    // are the guard's and not a server that was never there.
    let local = HttpAgentInvoker::new(&EndpointPolicy::loopback()).expect("client");
    let reached = local.invoke(&agent, &call).await.unwrap_err();
    assert_ne!(reached.kind, FailureKind::ForbiddenEndpoint, "{reached:?}");
    assert!(
        server.connections() >= 1,
        "the allowed call never connected"
    );
}
