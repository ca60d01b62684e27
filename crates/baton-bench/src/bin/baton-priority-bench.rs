//! How long urgent work waits behind a backlog, on the local stack: a workflow of `--backlog`
//! normal tasks is queued first, then one `critical` task is submitted. The benchmark reports
//! each task's wait (submission to the start of its call), the critical task's against the
//! normal tasks' median, and how many normal tasks started before it. It reports numbers and
//! asserts nothing about time.
//!
//! Usage: baton-priority-bench [--backlog N] [--agent-latency-ms MS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_local::agents::{AgentReply, AgentServer};
use baton_local::emulator::Emulator;
use baton_local::project_root;
use baton_local::stack::{LocalStack, StackOptions};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "baton-priority-bench",
    about = "The wait of a critical task submitted behind a backlog of normal ones"
)]
struct Args {
    /// Normal tasks queued before the critical one.
    #[arg(long, default_value_t = 300)]
    backlog: usize,
    /// How long the agent takes per call.
    #[arg(long, default_value_t = 50)]
    agent_latency_ms: u64,
}

type BenchError = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), BenchError> {
    let args = Args::parse();
    let started = Instant::now();
    let emulator = Emulator::start(&project_root())?;
    let mut options = StackOptions::new("baton-priority-bench");
    options.sweep_every = Some(Duration::ZERO);
    let stack = LocalStack::start_on_emulator(emulator.endpoint(), options).await?;
    let delay = Duration::from_millis(args.agent_latency_ms);
    let agent = AgentServer::start(Arc::new(move |_: &Value| {
        AgentReply::ok(json!({ "done": true })).after(delay)
    }))
    .await?;
    let http = baton_cli::tenant_client(baton_cli::LOCAL_TENANT).build()?;
    let api = stack.api_url.clone();
    let registered = http
        .post(format!("{api}/v1/agents"))
        .json(&json!({ "name": "worker", "endpoint": agent.url, "capabilities": ["work"] }))
        .send()
        .await?;
    if !registered.status().is_success() {
        return Err(format!("agent registration failed: {}", registered.text().await?).into());
    }

    let backlog: Vec<Value> = (0..args.backlog)
        .map(|i| json!({ "id": format!("n{i}"), "capability": "work", "priority": "normal" }))
        .collect();
    let normal = submit(&http, &api, json!({ "name": "backlog", "tasks": backlog })).await?;
    let critical = submit(
        &http,
        &api,
        json!({ "name": "urgent", "tasks": [
            { "id": "c", "capability": "work", "priority": "critical", "type": "fraud_detection" }
        ]}),
    )
    .await?;
    println!(
        "{} normal tasks queued, then one critical task; the agent takes {} ms per call",
        args.backlog, args.agent_latency_ms
    );

    let normal_view = wait(&http, &api, &normal, "backlog").await?;
    let critical_view = wait(&http, &api, &critical, "critical").await?;
    let normal_waits = waits(&normal_view)?;
    let critical_start = starts(&critical_view)?[0];
    let critical_wait = critical_start - created_ms(&critical_view)?;
    let mut sorted = normal_waits.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let p90 = sorted[sorted.len() * 9 / 10];
    let before = starts(&normal_view)?
        .iter()
        .filter(|start| **start < critical_start)
        .count();

    println!();
    println!(
        "Priority benchmark: {} normal tasks, then 1 critical",
        args.backlog
    );
    println!(
        "  critical task's band:        {}",
        critical_view["tasks"][0]["band"]
    );
    println!("  critical task's wait:        {critical_wait} ms");
    println!(
        "  normal tasks' median wait:   {median} ms (p90 {p90} ms, max {} ms)",
        sorted[sorted.len() - 1]
    );
    println!(
        "  normal tasks started before the critical one: {before} of {} ({:.1} %)",
        args.backlog,
        before as f64 * 100.0 / args.backlog as f64
    );
    println!("  wall time: {:.1} s", started.elapsed().as_secs_f64());
    stack.shutdown().await;
    Ok(())
}

async fn submit(http: &reqwest::Client, api: &str, body: Value) -> Result<String, BenchError> {
    let answer: Value = http
        .post(format!("{api}/v1/workflows"))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    answer["workflow_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("workflow refused: {answer}").into())
}

/// Polls the workflow until it ends, printing progress for the backlog.
async fn wait(
    http: &reqwest::Client,
    api: &str,
    id: &str,
    what: &str,
) -> Result<Value, BenchError> {
    let mut last_report = Instant::now();
    loop {
        let view: Value = http
            .get(format!("{api}/v1/workflows/{id}"))
            .send()
            .await?
            .json()
            .await?;
        match view["status"].as_str() {
            Some("running") => {
                if last_report.elapsed() > Duration::from_secs(5) {
                    let done = view["tasks"].as_array().map_or(0, |t| {
                        t.iter().filter(|t| t["status"] == "succeeded").count()
                    });
                    println!("  {what}: {done} of {} tasks done", view["task_count"]);
                    last_report = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some("succeeded") => return Ok(view),
            other => return Err(format!("workflow {id} ended {other:?}").into()),
        }
    }
}

fn millis(value: &Value) -> Result<i64, BenchError> {
    let text = value.as_str().ok_or("missing time")?;
    let at = humantime::parse_rfc3339(text)?;
    Ok(at.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}

fn created_ms(view: &Value) -> Result<i64, BenchError> {
    millis(&view["created_at"])
}

/// When each task's first call started.
fn starts(view: &Value) -> Result<Vec<i64>, BenchError> {
    view["tasks"]
        .as_array()
        .ok_or("no tasks")?
        .iter()
        .map(|t| millis(&t["attempts"][0]["started_at"]))
        .collect()
}

fn waits(view: &Value) -> Result<Vec<i64>, BenchError> {
    let created = created_ms(view)?;
    Ok(starts(view)?.into_iter().map(|s| s - created).collect())
}
