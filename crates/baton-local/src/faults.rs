//! A fault-injecting HTTP proxy between the handlers' AWS SDK clients and the emulator.
//!
//! The handlers' SDK clients get [`FaultProxy::endpoint`] as their endpoint. The proxy forwards
//! every request to the emulator as it came (method, path, query, headers including the SigV4
//! ones, and body; only hop-by-hop headers are dropped, and the HTTP client adds `accept: */*`
//! where it is missing) and returns the emulator's answer, except for the requests it picks to
//! fail. The faults thus happen on the real network path and meet the SDK's real retry
//! behaviour, which Baton's exactly-once-in-effect design must survive:
//! - **lost write response**: a DynamoDB write is applied, then its connection is closed before
//!   any byte of the answer is sent. The SDK sees "connection closed before message completed",
//!   which it classifies as transient and retries, and the retry meets its own earlier write;
//! - **throttling**: a DynamoDB item request is not forwarded and gets DynamoDB's
//!   `ProvisionedThroughputExceededException`, which the SDK classifies as throttling and
//!   retries after a back-off;
//! - **duplicate send**: an SQS `SendMessage`/`SendMessageBatch` is forwarded twice, so the
//!   queue holds the message twice, as at-least-once delivery allows;
//! - **outage**: for a while every connection is closed unanswered, as if the emulator were down.
//!
//! Random faults follow the rates of a [`FaultPlan`], drawn from a small seeded generator, so a
//! run is reproducible for a given seed and request order. A [`FaultRule`] injects one specific
//! fault deterministically, for tests; rules take precedence over the plan, and an outage over
//! both.
//!
//! Both services speak AWS JSON here, so the `x-amz-target` header names the operation
//! (`DynamoDB_20120810.UpdateItem`, `AmazonSQS.SendMessage`). Request bodies are matched against
//! rules but never logged.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The largest request the proxy reads: DynamoDB's `BatchWriteItem` limit with room to spare.
const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// Headers that describe one connection, not the message, so they are not passed on.
/// `content-length` is recomputed from the body by each side.
const CONNECTION_HEADERS: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    header::CONTENT_LENGTH,
];

/// The DynamoDB operations that write: their responses can be lost after the write.
const DYNAMODB_WRITES: [&str; 5] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
];

/// The DynamoDB operations on items, the ones DynamoDB throttles with
/// `ProvisionedThroughputExceededException` (control-plane calls are never throttled that way).
const DYNAMODB_ITEM_OPERATIONS: [&str; 13] = [
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
    "ExecuteStatement",
    "BatchExecuteStatement",
    "ExecuteTransaction",
];

/// The SQS operations that put messages on a queue.
const SQS_SENDS: [&str; 2] = ["SendMessage", "SendMessageBatch"];

const THROTTLING_ERROR: &str = concat!(
    r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","#,
    r#""message":"The level of configured provisioned throughput for the table was exceeded (injected by the fault proxy)"}"#
);

/// The rates of random faults. The default injects none.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Seed of the generator the faults are drawn from; [`FaultProxy::set_plan`] reseeds it.
    pub seed: u64,
    /// Share of SQS SendMessage/SendMessageBatch requests sent twice.
    pub duplicate_send_rate: f64,
    /// Share of DynamoDB write requests applied but whose response is lost.
    pub lost_write_response_rate: f64,
    /// Share of DynamoDB item requests answered with a throttling error, not forwarded.
    pub throttle_rate: f64,
}

/// One kind of fault, and the requests it can happen to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A DynamoDB write (PutItem, UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems)
    /// is applied and its response lost.
    LoseResponse,
    /// A DynamoDB item request (reads and writes) is refused as throttled, not applied.
    Throttle,
    /// An SQS SendMessage or SendMessageBatch is applied twice.
    Duplicate,
}

impl Fault {
    fn service(self) -> Service {
        match self {
            Fault::LoseResponse | Fault::Throttle => Service::DynamoDb,
            Fault::Duplicate => Service::Sqs,
        }
    }

    fn operations(self) -> &'static [&'static str] {
        match self {
            Fault::LoseResponse => &DYNAMODB_WRITES,
            Fault::Throttle => &DYNAMODB_ITEM_OPERATIONS,
            Fault::Duplicate => &SQS_SENDS,
        }
    }

    fn applies_to(self, call: Call<'_>) -> bool {
        self.service() == call.service && self.operations().contains(&call.operation)
    }
}

/// A deterministic fault: applied to the next `times` requests of `operation` (e.g. "UpdateItem",
/// "PutItem", "SendMessage") whose request body contains every string of `body_contains`.
#[derive(Debug, Clone)]
pub struct FaultRule {
    pub operation: String,
    /// Substrings of the raw JSON body, e.g. a key's value or `":running"`.
    pub body_contains: Vec<String>,
    pub fault: Fault,
    pub times: u32,
}

impl FaultRule {
    /// A rule applied to the first matching request only.
    pub fn once(operation: &str, body_contains: &[&str], fault: Fault) -> Self {
        FaultRule {
            operation: operation.to_string(),
            body_contains: body_contains.iter().map(|s| s.to_string()).collect(),
            fault,
            times: 1,
        }
    }

    fn matches(&self, call: Call<'_>, body: &[u8]) -> bool {
        self.times > 0
            && self.operation == call.operation
            && self.fault.service() == call.service
            && (self.body_contains.is_empty()
                || std::str::from_utf8(body)
                    .is_ok_and(|body| self.body_contains.iter().all(|s| body.contains(s.as_str()))))
    }
}

/// Why [`FaultProxy::add_rule`] refused a rule that could never apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultRuleError {
    #[error("a {fault:?} fault cannot happen to {operation}; it applies to {applies_to:?}")]
    NotApplicable {
        fault: Fault,
        operation: String,
        applies_to: &'static [&'static str],
    },
    #[error("a rule for {0} applies 0 times")]
    NeverApplies(String),
}

/// What the proxy did, for reports and assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultReport {
    /// Every request received, whatever happened to it.
    pub requests: u64,
    /// Write responses lost after the write reached the emulator.
    pub lost_responses: u64,
    pub throttled: u64,
    /// Sends whose second copy reached the queue.
    pub duplicated_sends: u64,
    /// Requests dropped during an outage.
    pub outage_drops: u64,
    /// Requests a rule picked (the others were picked by the plan's rates).
    pub rule_hits: u64,
}

/// A running proxy. It stops serving when dropped.
pub struct FaultProxy {
    endpoint: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (e.g. `http://127.0.0.1:5123`) on a free loopback port.
    pub async fn start(upstream: &str, plan: FaultPlan) -> io::Result<FaultProxy> {
        let upstream_url = reqwest::Url::parse(upstream).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("upstream {upstream}: {e}"),
            )
        })?;
        let http = reqwest::Client::builder()
            .no_proxy()
            // The SDK has its own timeouts; long polls (ReceiveMessage) must not be cut here.
            .pool_max_idle_per_host(64)
            .build()
            .map_err(io::Error::other)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            upstream: upstream_url.as_str().trim_end_matches('/').to_string(),
            http,
            faults: Mutex::new(Faults::new(plan)),
            counters: Counters::default(),
        });
        let (stop, mut stopped) = watch::channel(false);
        let app = axum::Router::new()
            .fallback(proxy_request)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(%error, "fault proxy stopped");
            }
        });
        Ok(FaultProxy {
            endpoint,
            shared,
            stop,
        })
    }

    /// The URL to give the SDK clients: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Replaces the rates at run time (e.g. none during set-up) and reseeds the generator with
    /// the plan's seed, so what follows is reproducible on its own.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut faults = self.shared.faults();
        faults.random = SplitMix64(plan.seed);
        faults.plan = plan;
    }

    /// Adds a deterministic fault, applied before any random one. A rule that could never
    /// apply (a fault its operation cannot have, or `times: 0`) is refused.
    pub fn add_rule(&self, rule: FaultRule) -> Result<(), FaultRuleError> {
        if rule.times == 0 {
            return Err(FaultRuleError::NeverApplies(rule.operation));
        }
        let call = Call {
            service: rule.fault.service(),
            operation: &rule.operation,
        };
        if !rule.fault.applies_to(call) {
            return Err(FaultRuleError::NotApplicable {
                fault: rule.fault,
                operation: rule.operation,
                applies_to: rule.fault.operations(),
            });
        }
        self.shared.faults().rules.push(rule);
        Ok(())
    }

    /// Rules not yet used up (so a test can wait until its fault happened).
    pub fn pending_rules(&self) -> usize {
        self.shared.faults().rules.len()
    }

    /// From now on and for `duration`, every request is dropped unanswered. A new outage
    /// replaces the current one.
    pub fn outage(&self, duration: Duration) {
        self.shared.faults().outage_until = Some(Instant::now() + duration);
    }

    pub fn report(&self) -> FaultReport {
        let c = &self.shared.counters;
        FaultReport {
            requests: c.requests.load(Ordering::Relaxed),
            lost_responses: c.lost_responses.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            duplicated_sends: c.duplicated_sends.load(Ordering::Relaxed),
            outage_drops: c.outage_drops.load(Ordering::Relaxed),
            rule_hits: c.rule_hits.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What the proxy's requests share.
struct Shared {
    /// Scheme, host and port of the emulator, without a trailing slash.
    upstream: String,
    /// Pooled: the proxy carries thousands of requests a minute in benchmarks.
    http: reqwest::Client,
    faults: Mutex<Faults>,
    counters: Counters,
}

impl Shared {
    /// The fault state. Nothing panics while holding it, but a poisoned lock is still usable.
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides the fate of one request.
    fn decide(&self, call: Option<Call<'_>>, body: &[u8]) -> Decision {
        let mut faults = self.faults();
        if faults
            .outage_until
            .is_some_and(|until| Instant::now() < until)
        {
            self.counters.outage_drops.fetch_add(1, Ordering::Relaxed);
            return Decision::Drop;
        }
        let Some(call) = call else {
            return Decision::Forward;
        };
        let fault = match faults.take_rule(call, body) {
            Some(fault) => {
                self.counters.rule_hits.fetch_add(1, Ordering::Relaxed);
                Some(fault)
            }
            None => faults.draw(call),
        };
        match fault {
            None => Decision::Forward,
            Some(Fault::Throttle) => {
                self.counters.throttled.fetch_add(1, Ordering::Relaxed);
                Decision::Throttle
            }
            Some(Fault::LoseResponse) => Decision::LoseResponse,
            Some(Fault::Duplicate) => Decision::Duplicate,
        }
    }

    /// Sends one copy of the request to the emulator and reads its whole answer.
    async fn forward(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, reqwest::Error> {
        let mut answer = self
            .http
            .request(method, format!("{}{path_and_query}", self.upstream))
            .headers(headers)
            .body(body)
            .send()
            .await?;
        let status = answer.status();
        let mut headers = std::mem::take(answer.headers_mut());
        let body = answer.bytes().await?;
        remove_connection_headers(&mut headers);
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The fault state behind the lock: the plan, its generator, the rules and any outage.
struct Faults {
    plan: FaultPlan,
    random: SplitMix64,
    /// In the order added; used-up rules are removed.
    rules: Vec<FaultRule>,
    outage_until: Option<Instant>,
}

impl Faults {
    fn new(plan: FaultPlan) -> Self {
        Faults {
            random: SplitMix64(plan.seed),
            plan,
            rules: Vec::new(),
            outage_until: None,
        }
    }

    /// The fault of the first rule matching the request, using it up.
    fn take_rule(&mut self, call: Call<'_>, body: &[u8]) -> Option<Fault> {
        let index = self.rules.iter().position(|r| r.matches(call, body))?;
        let rule = &mut self.rules[index];
        rule.times -= 1;
        let fault = rule.fault;
        if rule.times == 0 {
            self.rules.remove(index);
        }
        Some(fault)
    }

    /// A random fault by the plan's rates. Draws only for rates that apply, so the sequence
    /// depends on the seed and the order of the requests alone.
    fn draw(&mut self, call: Call<'_>) -> Option<Fault> {
        let plan = &self.plan;
        [
            (Fault::Throttle, plan.throttle_rate),
            (Fault::LoseResponse, plan.lost_write_response_rate),
            (Fault::Duplicate, plan.duplicate_send_rate),
        ]
        .into_iter()
        .filter(|(fault, rate)| *rate > 0.0 && fault.applies_to(call))
        .find(|(_, rate)| self.random.next_unit() < *rate)
        .map(|(fault, _)| fault)
    }
}

/// What the proxy does with one request.
enum Decision {
    Forward,
    Throttle,
    LoseResponse,
    Duplicate,
    /// Outage: close the connection unanswered, without forwarding.
    Drop,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    lost_responses: AtomicU64,
    throttled: AtomicU64,
    duplicated_sends: AtomicU64,
    outage_drops: AtomicU64,
    rule_hits: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    DynamoDb,
    Sqs,
}

/// The service and operation a request calls, from its `x-amz-target` header.
#[derive(Debug, Clone, Copy)]
struct Call<'a> {
    service: Service,
    operation: &'a str,
}

impl<'a> Call<'a> {
    fn of(target: &'a HeaderValue) -> Option<Self> {
        let target = target.to_str().ok()?;
        let (prefix, operation) = target.split_once('.')?;
        // `DynamoDB_20120810`, but not `DynamoDBStreams_20120810`.
        let service = if prefix.starts_with("DynamoDB_") {
            Service::DynamoDb
        } else if prefix == "AmazonSQS" {
            Service::Sqs
        } else {
            return None;
        };
        Some(Call { service, operation })
    }
}

async fn proxy_request(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_REQUEST_BYTES).await else {
        return closed_connection();
    };
    // A cheap clone (shared bytes), so the headers can move on unchanged.
    let target = parts.headers.get("x-amz-target").cloned();
    let call = target.as_ref().and_then(Call::of);
    let decision = shared.decide(call, &body);
    let operation = call.map_or("unknown", |c| c.operation);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    remove_connection_headers(&mut headers);
    match decision {
        Decision::Drop => {
            tracing::debug!(operation, "fault proxy: outage, connection closed");
            closed_connection()
        }
        Decision::Throttle => {
            tracing::debug!(operation, "fault proxy: throttled");
            throttling_error()
        }
        Decision::Forward => {
            match shared
                .forward(parts.method, path_and_query, headers, body)
                .await
            {
                Ok(response) => response,
                Err(error) => upstream_failed(operation, &error),
            }
        }
        Decision::LoseResponse => {
            match shared
                .forward(parts.method, path_and_query, headers, body)
                .await
            {
                Ok(_) => {
                    shared
                        .counters
                        .lost_responses
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(operation, "fault proxy: write applied, response lost");
                    closed_connection()
                }
                Err(error) => upstream_failed(operation, &error),
            }
        }
        Decision::Duplicate => {
            let first = shared
                .forward(
                    parts.method.clone(),
                    path_and_query,
                    headers.clone(),
                    body.clone(),
                )
                .await;
            let first = match first {
                Ok(response) => response,
                Err(error) => return upstream_failed(operation, &error),
            };
            // A refused send (e.g. no such queue) puts nothing on a queue, so nothing to repeat.
            if !first.status().is_success() {
                return first;
            }
            // Sent before answering, so the queue holds both copies once the send returns.
            match shared
                .forward(parts.method, path_and_query, headers, body)
                .await
            {
                Ok(_) => {
                    shared
                        .counters
                        .duplicated_sends
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(operation, "fault proxy: send duplicated");
                }
                Err(error) => {
                    tracing::warn!(operation, %error, "fault proxy: the duplicate send failed");
                }
            }
            first
        }
    }
}

/// The emulator did not answer: the client sees what it would see without the proxy.
fn upstream_failed(operation: &str, error: &reqwest::Error) -> Response {
    tracing::warn!(operation, %error, "fault proxy: the emulator did not answer");
    closed_connection()
}

/// A response whose body fails at once. Hyper then closes the connection without writing
/// anything (the head is still in its buffer), so the client sees the connection close before
/// any answer: an I/O error the SDK retries, as it would a response lost on the network.
fn closed_connection() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, _>(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connection closed by the fault proxy",
        ))
    });
    Response::new(Body::from_stream(failing))
}

/// DynamoDB's answer to a request beyond the table's throughput, which the SDK classifies as
/// throttling by its error code.
fn throttling_error() -> Response {
    let mut response = Response::new(Body::from(THROTTLING_ERROR));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response
}

fn remove_connection_headers(headers: &mut HeaderMap) {
    for name in &CONNECTION_HEADERS {
        headers.remove(name);
    }
}

/// SplitMix64: tiny, fast and good enough to draw faults reproducibly from a seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits as the mantissa of an f64.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(service: Service, operation: &str) -> Call<'_> {
        Call { service, operation }
    }

    fn draws(seed: u64, n: usize) -> Vec<Option<Fault>> {
        let mut faults = Faults::new(FaultPlan {
            seed,
            throttle_rate: 0.3,
            lost_write_response_rate: 0.3,
            ..FaultPlan::default()
        });
        (0..n)
            .map(|_| faults.draw(call(Service::DynamoDb, "UpdateItem")))
            .collect()
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        assert_eq!(draws(42, 200), draws(42, 200));
        assert_ne!(draws(42, 200), draws(43, 200));
    }

    #[test]
    fn random_faults_only_happen_to_requests_they_apply_to() {
        let mut faults = Faults::new(FaultPlan {
            seed: 1,
            duplicate_send_rate: 1.0,
            lost_write_response_rate: 1.0,
            throttle_rate: 0.0,
        });
        assert_eq!(faults.draw(call(Service::DynamoDb, "GetItem")), None);
        assert_eq!(faults.draw(call(Service::DynamoDb, "CreateTable")), None);
        assert_eq!(faults.draw(call(Service::Sqs, "ReceiveMessage")), None);
        assert_eq!(
            faults.draw(call(Service::DynamoDb, "PutItem")),
            Some(Fault::LoseResponse)
        );
        assert_eq!(
            faults.draw(call(Service::Sqs, "SendMessageBatch")),
            Some(Fault::Duplicate)
        );
    }

    #[test]
    fn a_rule_applies_as_many_times_as_it_says_to_matching_bodies_only() {
        let mut faults = Faults::new(FaultPlan::default());
        faults.rules.push(FaultRule {
            times: 2,
            ..FaultRule::once("UpdateItem", &["task-1", ":running"], Fault::Throttle)
        });
        let update = call(Service::DynamoDb, "UpdateItem");
        let body = br#"{"Key":{"sk":{"S":"task-1"}},"ExpressionAttributeValues":{":running":{"S":"running"}}}"#;
        assert_eq!(
            faults.take_rule(update, br#"{"Key":{"sk":{"S":"task-2"}}}"#),
            None
        );
        assert_eq!(
            faults.take_rule(call(Service::DynamoDb, "PutItem"), body),
            None
        );
        assert_eq!(faults.take_rule(update, body), Some(Fault::Throttle));
        assert_eq!(faults.take_rule(update, body), Some(Fault::Throttle));
        assert_eq!(faults.take_rule(update, body), None);
        assert!(faults.rules.is_empty());
    }

    #[test]
    fn the_target_header_names_the_service_and_operation() {
        let target = HeaderValue::from_static("DynamoDB_20120810.UpdateItem");
        let c = Call::of(&target).expect("a DynamoDB call");
        assert_eq!((c.service, c.operation), (Service::DynamoDb, "UpdateItem"));
        let target = HeaderValue::from_static("AmazonSQS.SendMessage");
        let c = Call::of(&target).expect("an SQS call");
        assert_eq!((c.service, c.operation), (Service::Sqs, "SendMessage"));
        let target = HeaderValue::from_static("DynamoDBStreams_20120810.GetRecords");
        assert!(Call::of(&target).is_none());
    }
}
