//! Measures the Lambda binaries themselves: init time and peak memory, under a stand-in for the
//! Lambda Runtime API, with the handlers' AWS calls going to the emulator.
//!
//! Build the binaries first (`sam build`, or `cargo lambda build --release`), then:
//! baton-runtime-bench [--invocations N] [--binaries DIR]   (default: 50, target/lambda)
//!
//! Init is the time from starting the process to its first request for an event: what Lambda
//! reports as Init Duration, minus the sandbox's own start. Peak RSS is the process's high-water
//! mark (VmHWM) after all invocations.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use baton_local::emulator::Emulator;
use baton_local::project_root;
use baton_local::stack::{LocalStack, StackOptions};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};

/// The runtime API's side: events to hand out, and what came back.
struct RuntimeApi {
    events: Mutex<mpsc::Receiver<Value>>,
    first_poll: Mutex<Option<Instant>>,
    results: mpsc::Sender<(String, bool)>,
    next_id: std::sync::atomic::AtomicU64,
}

async fn next_event(State(api): State<Arc<RuntimeApi>>) -> Response {
    api.first_poll.lock().await.get_or_insert_with(Instant::now);
    let Some(event) = api.events.lock().await.recv().await else {
        // No more events: hold the request, as Lambda does while the sandbox is frozen.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let id = api
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    let deadline = baton_types::clock::now_ms() + 30_000;
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:000000000000:function:bench"
            .parse()
            .unwrap(),
    );
    (StatusCode::OK, headers, event.to_string()).into_response()
}

async fn invocation_result(
    State(api): State<Arc<RuntimeApi>>,
    Path((id, outcome)): Path<(String, String)>,
    body: String,
) -> StatusCode {
    let ok = outcome == "response";
    if !ok {
        eprintln!("invocation {id} failed: {body}");
    }
    let _ = api.results.send((id, ok)).await;
    StatusCode::ACCEPTED
}

struct Measurement {
    init: Duration,
    peak_rss_kb: u64,
    failures: usize,
}

async fn measure(
    binary: &PathBuf,
    env: &HashMap<String, String>,
    event: &Value,
    invocations: usize,
) -> Result<Measurement, Box<dyn std::error::Error>> {
    let (event_tx, event_rx) = mpsc::channel(invocations);
    let (result_tx, mut result_rx) = mpsc::channel(invocations);
    let api = Arc::new(RuntimeApi {
        events: Mutex::new(event_rx),
        first_poll: Mutex::new(None),
        results: result_tx,
        next_id: Default::default(),
    });
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_event))
        .route(
            "/2018-06-01/runtime/invocation/{id}/{outcome}",
            post(invocation_result),
        )
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .envs(env)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().ok_or("no pid")?;
    for _ in 0..invocations {
        event_tx.send(event.clone()).await?;
    }
    let mut failures = 0;
    for _ in 0..invocations {
        let (_, ok) = tokio::time::timeout(Duration::from_secs(30), result_rx.recv())
            .await?
            .ok_or("runtime API closed")?;
        failures += usize::from(!ok);
    }
    let first_poll = api
        .first_poll
        .lock()
        .await
        .ok_or("the function never asked for an event")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    child.kill().await?;
    server.abort();
    Ok(Measurement {
        init: first_poll - started,
        peak_rss_kb,
        failures,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let invocations: usize = flag("--invocations").map_or(Ok(50), |v| v.parse())?;
    let root = project_root();
    let binaries = flag("--binaries").map_or_else(|| root.join("target/lambda"), PathBuf::from);

    let emulator = Emulator::start(&root)?;
    let options = StackOptions::api_only("baton-runtime");
    let stack = LocalStack::start_on_emulator(emulator.endpoint(), options).await?;

    let settings = &stack.settings;
    let env: HashMap<String, String> = [
        ("STATE_TABLE", settings.state_table.as_str()),
        ("MEMORY_TABLE", settings.memory_table.as_str()),
        (
            "ROUTE_QUEUE_URL",
            stack.queue_url("RouteQueue").unwrap_or_default(),
        ),
        (
            "EXECUTE_QUEUE_URL",
            stack.queue_url("ExecuteQueue").unwrap_or_default(),
        ),
        (
            "LEARN_QUEUE_URL",
            stack.queue_url("LearnQueue").unwrap_or_default(),
        ),
        ("AWS_ENDPOINT_URL", emulator.endpoint()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
        ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let task =
        json!({ "v": 1, "tenant": "default", "workflow_id": "w", "task_id": "t", "attempt": 1 });
    let sqs = |body: Value| json!({ "Records": [{ "messageId": "m1", "receiptHandle": "r", "body": body.to_string(), "eventSource": "aws:sqs" }] });
    let mut outcome = task.clone();
    outcome["agent"] = json!("worker");
    outcome["task_type"] = json!("work");
    outcome["success"] = json!(true);
    outcome["latency_ms"] = json!(12);
    outcome["finished_at_ms"] = json!(baton_types::clock::now_ms());
    let mut routed = task.clone();
    routed["capability"] = json!("work");
    let mut execute = routed.clone();
    execute["route"] = json!({ "primary": "worker", "fallbacks": [], "strategy": "learned", "confidence": 0.7, "reasoning": "bench" });
    let cases: Vec<(&str, Value)> = vec![
        (
            "orchestrate",
            serde_json::from_str(include_str!(
                "../../../../tests/fixtures/apigw-v2-post-workflow.json"
            ))?,
        ),
        ("route", sqs(routed)),
        ("execute-agent", sqs(execute)),
        ("learn", sqs(outcome)),
        (
            "cleanup",
            json!({ "version": "0", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {} }),
        ),
    ];

    println!("Lambda binaries under a local Runtime API, {invocations} invocations each, AWS calls to moto\n");
    println!(
        "{:<14} {:>10} {:>10} {:>14} {:>9}",
        "function", "size MB", "init ms", "peak RSS MB", "failures"
    );
    for (name, event) in &cases {
        let binary = binaries.join(name).join("bootstrap");
        let size = std::fs::metadata(&binary)
            .map_err(|e| {
                format!(
                    "{}: {e} (build with `sam build` or `cargo lambda build --release`)",
                    binary.display()
                )
            })?
            .len();
        let m = measure(&binary, &env, event, invocations).await?;
        println!(
            "{name:<14} {:>10.2} {:>10.1} {:>14.1} {:>9}",
            size as f64 / 1_048_576.0,
            m.init.as_secs_f64() * 1000.0,
            m.peak_rss_kb as f64 / 1024.0,
            m.failures
        );
    }
    stack.shutdown().await;
    Ok(())
}
