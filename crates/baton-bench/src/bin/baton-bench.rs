//! Counts the AWS API calls the chain makes per task, for the diamond workflow, on the local
//! stack, and prices them. A benchmark: it reports numbers and asserts nothing about time.
//!
//! Usage: baton-bench [--workflows N] [--fail-first-attempt] [--output-bytes N]
//!                    [--inline-payloads] [--stream]
//!
//! With `--fail-first-attempt` the agent answers 503 to every task's first attempt, so each
//! task takes exactly one retry: the difference from a plain run is what a retry costs. With
//! `--output-bytes N` every output is padded to about N bytes of JSON: DynamoDB bills a write
//! by the whole item's size, so this is what large outputs cost. With `--inline-payloads` the
//! stack has no payload bucket, so every output stays on its item however large: what large
//! outputs cost without the bucket. With `--stream` every task streams: the agent answers
//! server-sent events, `--output-bytes` of text in 32-byte parts, one every 20 ms (about a
//! model's pace), so the figures are what a streamed answer of that size costs.
//!
//! The write units are counted twice. The estimate charges one unit per item written (two in
//! a transaction), whatever its size. The meter asks the emulator, which adds up what DynamoDB
//! would bill for each write by the item's size (see `meter_writes` in infra/emulator.py):
//! one unit per KB begun of the larger of the item before and after, twice in a transaction.
//! Neither counts the writes to the indexes, which DynamoDB bills on their own.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton_chain::store::LearningStore;
use baton_local::agents::{AgentReply, AgentServer};
use baton_local::emulator::{sdk_config, Emulator};
use baton_local::project_root;
use baton_local::stack::{LocalStack, StackOptions};
use clap::Parser;
use serde_json::{json, Value};

/// List prices, us-east-1, on-demand / standard queue, in USD per million.
const DYNAMODB_WRITE_UNIT: f64 = 0.625;
const DYNAMODB_READ_UNIT: f64 = 0.125;
const SQS_REQUEST: f64 = 0.40;
/// S3 Standard: PUT and COPY requests, GET requests.
const S3_PUT_REQUEST: f64 = 5.0;
const S3_GET_REQUEST: f64 = 0.40;

#[derive(Debug, Parser)]
#[command(
    name = "baton-bench",
    about = "AWS calls and cost per task, for the diamond workflow"
)]
struct Args {
    /// Diamond workflows to run (four tasks each).
    #[arg(long, default_value_t = 25)]
    workflows: usize,
    /// The agent fails every task's first attempt (503), so each task is retried once.
    #[arg(long)]
    fail_first_attempt: bool,
    /// Pad every output to about this many bytes of JSON.
    #[arg(long, default_value_t = 0)]
    output_bytes: usize,
    /// Run without the payload bucket: every output stays on its item, however large.
    #[arg(long)]
    inline_payloads: bool,
    /// Every task streams its answer: `--output-bytes` of text in 32-byte parts every 20 ms.
    #[arg(long)]
    stream: bool,
}

/// The parts of a streamed answer of `bytes` of text, 32 bytes each.
fn streamed_parts(bytes: usize) -> Vec<Value> {
    let text = "streamed ".repeat(bytes.div_ceil(9).max(1));
    text.as_bytes()[..bytes.max(1)]
        .chunks(32)
        .map(|part| json!({ "text": String::from_utf8_lossy(part) }))
        .collect()
}

/// The emulator's metered totals, once they have settled: two reads of the meter's file,
/// more than two of its 200 ms rewrites apart, that agree.
async fn settled_meter(path: &Path) -> Result<Value, Box<dyn std::error::Error>> {
    let read = || -> Option<Value> { serde_json::from_slice(&std::fs::read(path).ok()?).ok() };
    let mut last = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(450)).await;
        let now = read();
        if now.is_some() && now == last {
            return Ok(now.unwrap_or_default());
        }
        last = now;
    }
    Err(format!("the emulator's meter at {} did not settle", path.display()).into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let workflows = args.workflows;
    let fail_first = args.fail_first_attempt;
    let padding = "p".repeat(args.output_bytes.saturating_sub(40));
    let root = project_root();
    let meter_path =
        std::env::temp_dir().join(format!("baton-bench-meter-{}.json", std::process::id()));
    let emulator = Emulator::start_metered(&root, &meter_path)?;
    let mut options = StackOptions::new("baton-bench");
    options.sweep_every = Some(Duration::ZERO);
    if args.inline_payloads {
        // An empty value is no bucket.
        options
            .env_overrides
            .insert("PAYLOAD_BUCKET".into(), String::new());
    }
    let stack = LocalStack::start_on_emulator(emulator.endpoint(), options).await?;
    let parts = args.stream.then(|| streamed_parts(args.output_bytes));
    let agent = AgentServer::start(Arc::new(move |call: &Value| {
        if fail_first && call["attempt"] == 1 {
            AgentReply::error(503, "first attempts fail in this run")
        } else if let Some(parts) = &parts {
            AgentReply::streamed(true, parts, Duration::from_millis(20))
        } else {
            let mut output = json!({ "task": call["task_id"] });
            if !padding.is_empty() {
                output["pad"] = json!(padding);
            }
            AgentReply::ok(output)
        }
    }))
    .await?;
    let http = baton_cli::tenant_client(baton_cli::LOCAL_TENANT).build()?;
    let registered = http
        .post(format!("{}/v1/agents", stack.api_url))
        .json(
            &json!({ "name": "worker", "endpoint": agent.url, "capabilities": ["work"],
            // Half the calls fail on purpose with --fail-first-attempt: the circuit must not open.
            "circuit_breaker": { "failure_threshold": 100, "failure_rate": 1.0, "window": 100 } }),
        )
        .send()
        .await?;
    if !registered.status().is_success() {
        return Err(format!("agent registration failed: {}", registered.text().await?).into());
    }
    stack.api_calls.reset();
    // The chain is idle until the first workflow is posted.
    let metered_before = settled_meter(&meter_path).await?;

    let mut diamond = json!({ "name": "diamond",
        "defaults": { "retry": { "backoff": "fixed", "base_ms": 0, "jitter": "none" } },
        "tasks": [
        { "id": "a", "capability": "work", "input": { "text": "x" } },
        { "id": "b", "capability": "work", "depends_on": ["a"] },
        { "id": "c", "capability": "work", "depends_on": ["a"] },
        { "id": "d", "capability": "work", "depends_on": ["b", "c"] }
    ]});
    if args.stream {
        for task in diamond["tasks"].as_array_mut().into_iter().flatten() {
            task["stream"] = json!(true);
        }
    }
    let mut ids = Vec::new();
    for _ in 0..workflows {
        let accepted: Value = http
            .post(format!("{}/v1/workflows", stack.api_url))
            .json(&diamond)
            .send()
            .await?
            .json()
            .await?;
        ids.push(
            accepted["workflow_id"]
                .as_str()
                .ok_or("no workflow id")?
                .to_string(),
        );
    }
    let mut status_polls = 0.0;
    for id in &ids {
        loop {
            status_polls += 1.0;
            let view: Value = http
                .get(format!("{}/v1/workflows/{id}", stack.api_url))
                .send()
                .await?
                .json()
                .await?;
            match view["status"].as_str() {
                Some("running") => tokio::time::sleep(Duration::from_millis(100)).await,
                Some("succeeded") => break,
                other => return Err(format!("workflow {id} ended {other:?}").into()),
            }
        }
    }
    let tasks = (workflows * 4) as f64;
    // Learning is off the critical path: wait until every outcome (each attempt's) is learned.
    let outcomes = workflows as u64 * 4 * if fail_first { 2 } else { 1 };
    // Polled through a client of its own, so the polls stay out of the counts.
    let store = baton_aws::telemetry::AwsClients::new(&sdk_config(emulator.endpoint()), None)
        .store(&stack.settings);
    loop {
        let stats = store
            .agent_stats(&"default".parse().unwrap(), "work", &["worker".parse()?])
            .await?;
        if stats.get("worker").map_or(0, |s| s.count) >= outcomes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The status polls above are this client's, not the chain's: each was one strongly
    // consistent Query of one small partition. Leave them out.
    let mut counts = stack.api_calls.snapshot();
    let metered_after = settled_meter(&meter_path).await?;
    for (kind, polls) in [
        ("dynamodb.Query", status_polls),
        ("dynamodb.read_units", status_polls),
    ] {
        if let Some(n) = counts.get_mut(kind) {
            *n -= polls;
        }
    }

    println!(
        "Diamond workflow (a -> {{b, c}} -> d), {workflows} workflows, {} tasks, on moto{}{}{}\n",
        tasks as u64,
        if fail_first {
            "; every task's first attempt fails and is retried once"
        } else {
            ""
        },
        if args.output_bytes > 0 {
            format!("; outputs of about {} bytes", args.output_bytes)
        } else {
            String::new()
        },
        if args.inline_payloads {
            "; no payload bucket"
        } else {
            ""
        }
    );
    println!("{:<36} {:>10} {:>10}", "AWS calls", "total", "per task");
    for (kind, n) in &counts {
        println!("{kind:<36} {n:>10} {:>10.2}", n / tasks);
    }
    let sum = |prefix: &str, exclude: &[&str]| -> f64 {
        counts
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.split('.').count() == 2)
            .filter(|(k, _)| !exclude.iter().any(|e| k.ends_with(e)))
            .map(|(_, v)| v)
            .sum()
    };
    let sqs_requests = sum("sqs.", &["empty"]);
    let empty_receives = counts
        .get("sqs.ReceiveMessage.empty")
        .copied()
        .unwrap_or(0.0);
    let sqs_busy = sqs_requests - empty_receives;
    let write_units = counts.get("dynamodb.write_units").copied().unwrap_or(0.0);
    let read_units = counts.get("dynamodb.read_units").copied().unwrap_or(0.0);
    println!("\nPer task: {:.2} DynamoDB write units, {:.2} read units, {:.2} SQS requests ({:.2} excluding empty long polls)",
        write_units / tasks, read_units / tasks, sqs_requests / tasks, sqs_busy / tasks);
    let metered = |totals: &Value, field: &str| totals[field].as_f64().unwrap_or(0.0);
    let metered_units =
        metered(&metered_after, "write_units") - metered(&metered_before, "write_units");
    println!(
        "Metered write units per task (by item size, index writes not included): {:.2}",
        metered_units / tasks
    );
    if let Some(tables) = metered_after["tables"].as_object() {
        for (table, after) in tables {
            let before = &metered_before["tables"][table];
            let units = metered(after, "write_units") - metered(before, "write_units");
            let writes = metered(after, "writes") - metered(before, "writes");
            if writes > 0.0 {
                println!(
                    "  {table:<34} {:>7.2} units, {:>6.2} item writes per task",
                    units / tasks,
                    writes / tasks
                );
            }
        }
    }
    let per_million = |per_task: f64, price: f64| per_task * price;
    let dynamodb_cost = per_million(write_units / tasks, DYNAMODB_WRITE_UNIT)
        + per_million(read_units / tasks, DYNAMODB_READ_UNIT);
    let sqs_cost = per_million(sqs_busy / tasks, SQS_REQUEST);
    println!(
        "Cost per 1M tasks at list prices: DynamoDB ${dynamodb_cost:.2} + SQS ${sqs_cost:.2} = ${:.2} (Lambda and API Gateway not included)",
        dynamodb_cost + sqs_cost
    );
    let metered_cost = per_million(metered_units / tasks, DYNAMODB_WRITE_UNIT)
        + per_million(read_units / tasks, DYNAMODB_READ_UNIT);
    // The payload bucket's requests (storage is cents a GB-month, left out).
    let count = |name: &str| counts.get(name).copied().unwrap_or(0.0);
    let s3_cost = per_million(
        (count("s3.PutObject") + count("s3.CopyObject")) / tasks,
        S3_PUT_REQUEST,
    ) + per_million(count("s3.GetObject") / tasks, S3_GET_REQUEST);
    println!(
        "  with the metered write units: DynamoDB ${metered_cost:.2} + SQS ${sqs_cost:.2} + S3 ${s3_cost:.2} = ${:.2}",
        metered_cost + sqs_cost + s3_cost
    );
    stack.shutdown().await;
    drop(emulator);
    let _ = std::fs::remove_file(&meter_path);
    Ok(())
}
