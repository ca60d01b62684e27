//! Measures the Lambda binaries themselves: init time, CPU time and peak memory, under a
//! stand-in for the Lambda Runtime API, with the handlers' AWS calls going to the emulator.
//!
//! Build the binaries first (`sam build`, or `cargo lambda build --release`), then:
//! baton-runtime-bench [--invocations N] [--binaries DIR] [--profile-label TEXT]
//! (default: 50, target/lambda; DIR holds `<function>/bootstrap`)
//!
//! Init is the time from starting the process to its first request for an event: what Lambda
//! reports as Init Duration, minus the sandbox's own start. Peak RSS is the process's high-water
//! mark (VmHWM) after all invocations.
//!
//! CPU time is the process's user + system time. *Init CPU* is read at its first request for an
//! event; *CPU per invocation* is the CPU time at its request for the event after the last one,
//! minus init CPU, over the invocations. Each is read two ways: `/proc/<pid>/stat` (utime + stime,
//! in clock ticks, 10 ms here: coarse for init) and the sum of its threads' run time in
//! `/proc/<pid>/task/*/schedstat` (nanoseconds; misses threads that have exited), marked `*`.
//! *Wall per invocation* is the mean time from handing out an event to its result coming back,
//! what Lambda bills as Duration. On Lambda at 128 MB a function gets about 128/1769 of a vCPU,
//! so its CPU time stretches about 13.8 times; here it has a whole core.

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
use tokio::sync::{mpsc, watch, Mutex};

/// The runtime API's side: events to hand out, and what came back.
struct RuntimeApi {
    events: Mutex<mpsc::Receiver<Value>>,
    first_poll: Mutex<Option<Instant>>,
    /// The function's process id, once started; its CPU time is read at its first poll.
    pid: watch::Receiver<u32>,
    init_cpu: Mutex<Option<CpuTime>>,
    /// How many times the function has asked for an event.
    polls: watch::Sender<usize>,
    /// When each event (by request id) was handed out.
    handed_out: Mutex<HashMap<String, Instant>>,
    results: mpsc::Sender<(String, bool, Duration)>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A process's CPU time (user + system) so far, read two ways.
#[derive(Clone, Copy, Default)]
struct CpuTime {
    /// From `/proc/<pid>/stat`: utime + stime, whole clock ticks.
    stat: Duration,
    /// The sum of its live threads' run time from `/proc/<pid>/task/*/schedstat`, if readable.
    threads: Option<Duration>,
}

impl CpuTime {
    fn read(pid: u32, tick: Duration) -> Result<Self, Box<dyn std::error::Error>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name, in parentheses, may hold spaces: count fields after its end.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .ok_or("no command name in /proc/<pid>/stat")?
            .1
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15; the first after ')' is field 3.
        let ticks = |i: usize| -> Result<u32, Box<dyn std::error::Error>> {
            Ok(fields.get(i - 3).ok_or("short /proc/<pid>/stat")?.parse()?)
        };
        let stat = tick * (ticks(14)? + ticks(15)?);
        let threads = (|| {
            let mut sum = 0u64;
            for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
                let path = task.ok()?.path().join("schedstat");
                // A thread may end between listing and reading.
                let Ok(text) = std::fs::read_to_string(path) else {
                    continue;
                };
                sum += text.split_whitespace().next()?.parse::<u64>().ok()?;
            }
            Some(Duration::from_nanos(sum))
        })();
        Ok(Self { stat, threads })
    }
}

/// The length of a clock tick, the unit of `/proc/<pid>/stat`'s CPU times: `getconf CLK_TCK`,
/// else 100 a second.
fn clock_tick() -> Duration {
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100);
    Duration::from_secs(1) / hz
}

async fn next_event(State(api): State<Arc<RuntimeApi>>) -> Response {
    let first = api.first_poll.lock().await.is_none();
    if first {
        let now = Instant::now();
        // The process was started before it could ask; wait for its id to be stored.
        let mut pid = api.pid.clone();
        let pid = pid.wait_for(|&pid| pid != 0).await.map(|pid| *pid);
        if let Ok(pid) = pid {
            // It waits for this answer, so its CPU time stands still while it is read.
            *api.init_cpu.lock().await = CpuTime::read(pid, clock_tick()).ok();
        }
        api.first_poll.lock().await.get_or_insert(now);
    }
    api.polls.send_modify(|n| *n += 1);
    let Some(event) = api.events.lock().await.recv().await else {
        // No more events: hold the request, as Lambda does while the sandbox is frozen.
        std::future::pending::<()>().await;
        unreachable!()
    };
    let id = api
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .to_string();
    api.handed_out
        .lock()
        .await
        .insert(id.clone(), Instant::now());
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
    let took = api
        .handed_out
        .lock()
        .await
        .remove(&id)
        .map_or(Duration::ZERO, |at| at.elapsed());
    let ok = outcome == "response";
    if !ok {
        eprintln!("invocation {id} failed: {body}");
    }
    let _ = api.results.send((id, ok, took)).await;
    StatusCode::ACCEPTED
}

struct Measurement {
    init: Duration,
    init_cpu: CpuTime,
    /// CPU time after all invocations and the request for the next event.
    total_cpu: CpuTime,
    /// The sum of the invocations' times from event to result.
    invocations_wall: Duration,
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
    let (pid_tx, pid_rx) = watch::channel(0u32);
    let (polls, _) = watch::channel(0usize);
    let api = Arc::new(RuntimeApi {
        events: Mutex::new(event_rx),
        first_poll: Mutex::new(None),
        pid: pid_rx,
        init_cpu: Mutex::new(None),
        polls,
        handed_out: Mutex::new(HashMap::new()),
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
    pid_tx.send_replace(pid);
    for _ in 0..invocations {
        event_tx.send(event.clone()).await?;
    }
    let mut failures = 0;
    let mut invocations_wall = Duration::ZERO;
    for _ in 0..invocations {
        let (_, ok, took) = tokio::time::timeout(Duration::from_secs(30), result_rx.recv())
            .await?
            .ok_or("runtime API closed")?;
        failures += usize::from(!ok);
        invocations_wall += took;
    }
    // Its request for the event after the last: the last invocation's work is all done.
    let mut polls = api.polls.subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        polls.wait_for(|&n| n > invocations),
    )
    .await??;
    let total_cpu = CpuTime::read(pid, clock_tick())?;
    let init_cpu = api
        .init_cpu
        .lock()
        .await
        .ok_or("could not read the CPU time at the first request for an event")?;
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
        init_cpu,
        total_cpu,
        invocations_wall,
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
    let label = flag("--profile-label");

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

    let label = label.map_or_else(String::new, |l| format!(" [{l}]"));
    println!("Lambda binaries under a local Runtime API, {invocations} invocations each, AWS calls to moto{label}\n");
    println!(
        "{:<14} {:>10} {:>10} {:>14} {:>9} {:>12} {:>11} {:>13} {:>12} {:>12}",
        "function",
        "size MB",
        "init ms",
        "peak RSS MB",
        "failures",
        "init CPU ms",
        "CPU ms/inv",
        "init CPU* ms",
        "CPU* ms/inv",
        "wall ms/inv"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let per_invocation = |d: Duration| ms(d) / invocations.max(1) as f64;
    let precise = |width: usize, v: Option<f64>, decimals: usize| {
        v.map_or_else(
            || format!("{:>width$}", "-"),
            |v| format!("{v:>width$.decimals$}"),
        )
    };
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
        let (init_cpu, total_cpu) = (m.init_cpu, m.total_cpu);
        let threads = init_cpu.threads.zip(total_cpu.threads);
        println!(
            "{name:<14} {:>10.2} {:>10.1} {:>14.1} {:>9} {:>12.0} {:>11.3} {} {} {:>12.3}",
            size as f64 / 1_048_576.0,
            ms(m.init),
            m.peak_rss_kb as f64 / 1024.0,
            m.failures,
            ms(init_cpu.stat),
            per_invocation(total_cpu.stat.saturating_sub(init_cpu.stat)),
            precise(13, threads.map(|(i, _)| ms(i)), 2),
            precise(
                12,
                threads.map(|(i, t)| per_invocation(t.saturating_sub(i))),
                3
            ),
            per_invocation(m.invocations_wall),
        );
    }
    println!(
        "\nCPU: user + system from /proc/<pid>/stat (clock ticks); * from the threads' schedstat (ns)."
    );
    stack.shutdown().await;
    Ok(())
}
