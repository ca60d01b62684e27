//! The whole bill of Baton's work on the local stack, per task: DynamoDB write units by item
//! size with every index's writes, read units, SQS requests (the mappings' receives and deletes
//! included), Lambda invocations and GB-seconds, API Gateway requests, and the total at list
//! prices (`baton_bench::bill`). It runs a diamond (a -> {b, c} -> d) and a 20-task fan-out
//! (a -> 19 tasks) at each output size, then the idle cost of a deployment per month, and
//! reports Baton's time per DAG level: from a task's agent answering to its dependent's agent
//! being called. A benchmark: it reports numbers and asserts nothing about time.
//!
//! Usage: baton-bench [--tasks N] [--shapes diamond,fan-out] [--output-bytes 512,4096,32768]
//!                    [--fail-first-attempt] [--inline-payloads] [--stream] [--idle-sweeps N]
//!
//! With `--fail-first-attempt` the agent answers 503 to every task's first attempt, so each
//! task takes exactly one retry: the difference from a plain run is what a retry costs. Every
//! output is padded to about `--output-bytes` of JSON: DynamoDB bills a write by the whole
//! item's size. With `--inline-payloads` the stack has no payload bucket, so every output stays
//! on its item however large. With `--stream` every task streams: the agent answers server-sent
//! events, `--output-bytes` of text in 32-byte parts, one every 20 ms (about a model's pace).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_bench::bill::{self, prices, print_bill, Bill, Usage};
use baton_bench::percentile;
use baton_chain::store::{LearningStore, WorkflowStore};
use baton_local::agents::{AgentReply, AgentServer};
use baton_local::emulator::{sdk_config, Emulator};
use baton_local::project_root;
use baton_local::stack::{LocalStack, StackOptions};
use baton_local::template::{EventSpec, Template};
use baton_types::task::WorkflowStatus;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "baton-bench",
    about = "The whole AWS bill per task, by workflow shape and output size"
)]
struct Args {
    /// Tasks per run (shape and size): 25 diamonds or 5 fan-outs at 100.
    #[arg(long, default_value_t = 100)]
    tasks: usize,
    /// The workflow shapes to run.
    #[arg(long, value_delimiter = ',', default_values_t = [Shape::Diamond, Shape::FanOut])]
    shapes: Vec<Shape>,
    /// Pad every output to about these many bytes of JSON, a run each.
    #[arg(long, value_delimiter = ',', default_values_t = [512, 4096, 32768])]
    output_bytes: Vec<usize>,
    /// The agent fails every task's first attempt (503), so each task is retried once.
    #[arg(long)]
    fail_first_attempt: bool,
    /// Run without the payload bucket: every output stays on its item, however large.
    #[arg(long)]
    inline_payloads: bool,
    /// Every task streams its answer: `--output-bytes` of text in 32-byte parts every 20 ms.
    #[arg(long)]
    stream: bool,
    /// Workflows of each shape run one at a time after the cost runs, for Baton's time per DAG
    /// level without a backlog (0: none).
    #[arg(long, default_value_t = 20)]
    latency_workflows: usize,
    /// Scheduled sweeps of the idle stack to measure, for the idle cost (0: none).
    #[arg(long, default_value_t = 5)]
    idle_sweeps: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Shape {
    Diamond,
    FanOut,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shape::Diamond => "diamond",
            Shape::FanOut => "fan-out",
        })
    }
}

impl Shape {
    /// The workflow's tasks: (id, dependencies).
    fn tasks(self) -> Vec<(String, Vec<String>)> {
        let root = || ("a".to_string(), vec![]);
        match self {
            Shape::Diamond => vec![
                root(),
                ("b".into(), vec!["a".into()]),
                ("c".into(), vec!["a".into()]),
                ("d".into(), vec!["b".into(), "c".into()]),
            ],
            Shape::FanOut => std::iter::once(root())
                .chain((1..20).map(|i| (format!("t{i}"), vec!["a".into()])))
                .collect(),
        }
    }

    fn workflow(self, stream: bool) -> Value {
        let tasks: Vec<Value> = self
            .tasks()
            .into_iter()
            .map(|(id, depends_on)| {
                let mut task = json!({ "id": id, "capability": "work", "depends_on": depends_on });
                if depends_on.is_empty() {
                    task["input"] = json!({ "text": "x" });
                }
                if stream {
                    task["stream"] = json!(true);
                }
                task
            })
            .collect();
        json!({ "name": self.to_string(),
            "defaults": { "retry": { "backoff": "fixed", "base_ms": 0, "jitter": "none" } },
            "tasks": tasks })
    }
}

/// The parts of a streamed answer of `bytes` of text, 32 bytes each.
fn streamed_parts(bytes: usize) -> Vec<Value> {
    let text = "streamed ".repeat(bytes.div_ceil(9).max(1));
    text.as_bytes()[..bytes.max(1)]
        .chunks(32)
        .map(|part| json!({ "text": String::from_utf8_lossy(part) }))
        .collect()
}

/// When the agent was called for each (workflow, task) of this run, first attempts only.
type Calls = Arc<Mutex<HashMap<(String, String), Instant>>>;

/// Baton's time per DAG level: for each dependent, from the last of its dependencies' agent
/// calls (the agent answers at once) to its own agent call, in milliseconds, sorted.
fn level_gaps(calls: &Calls, shape: Shape, workflows: &[String]) -> Vec<f64> {
    let calls = calls.lock().unwrap_or_else(|p| p.into_inner());
    let mut gaps = Vec::new();
    for workflow in workflows {
        let at = |task: &str| calls.get(&(workflow.clone(), task.to_string())).copied();
        for (task, depends_on) in shape.tasks() {
            let parents: Option<Vec<Instant>> = depends_on.iter().map(|d| at(d)).collect();
            if let (Some(called), Some(Some(last))) =
                (at(&task), parents.map(|p| p.into_iter().max()))
            {
                gaps.push(called.duration_since(last).as_secs_f64() * 1000.0);
            }
        }
    }
    gaps.sort_by(f64::total_cmp);
    gaps
}

/// One run's figures, for the summary.
struct Run {
    shape: Shape,
    output_bytes: usize,
    bill: Bill,
    gaps: Vec<f64>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let fail_first = args.fail_first_attempt;
    let root = project_root();
    let meter_path =
        std::env::temp_dir().join(format!("baton-bench-meter-{}.json", std::process::id()));
    let emulator = Emulator::start_metered(&root, &meter_path)?;
    let mut options = StackOptions::new("baton-bench");
    // The sweeps are measured on their own, idle, at the end.
    options.sweep_every = Some(Duration::ZERO);
    // Batches gathered as the template's mappings gather them (learn: 5 s).
    options.batching_windows = true;
    if args.inline_payloads {
        // An empty value is no bucket.
        options
            .env_overrides
            .insert("PAYLOAD_BUCKET".into(), String::new());
    }
    let stack = LocalStack::start_on_emulator(emulator.endpoint(), options).await?;
    // What the agent answers: set for each run.
    let reply: Arc<Mutex<AgentReply>> = Arc::new(Mutex::new(AgentReply::ok(json!({}))));
    let calls: Calls = Default::default();
    let agent = {
        let (reply, calls) = (reply.clone(), calls.clone());
        AgentServer::start(Arc::new(move |call: &Value| {
            let key = (
                call["workflow_id"].as_str().unwrap_or_default().to_string(),
                call["task_id"].as_str().unwrap_or_default().to_string(),
            );
            if call["attempt"] == 1 {
                let mut calls = calls.lock().unwrap_or_else(|p| p.into_inner());
                calls.entry(key).or_insert_with(Instant::now);
            }
            if fail_first && call["attempt"] == 1 {
                AgentReply::error(503, "first attempts fail in this run")
            } else {
                reply.lock().unwrap_or_else(|p| p.into_inner()).clone()
            }
        }))
        .await?
    };
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
    // Polled through a client of its own, so the polls stay out of the counts.
    let store = baton_aws::telemetry::AwsClients::new(&sdk_config(emulator.endpoint()), None)
        .store(&stack.settings);
    let tenant: baton_types::ids::TenantId = "default".parse()?;
    // Lambda is billed at the durations measured one workflow at a time: under the cost runs'
    // backlog the emulator, not the handlers, sets how long an invocation takes.
    let mut durations = bill::Durations::new();
    // Every outcome, each attempt's, is learned before a run's figures are read.
    let outcomes = |tasks: usize| tasks as u64 * if fail_first { 2 } else { 1 };
    let mut learned = 0;
    if args.latency_workflows > 0 {
        *reply.lock().unwrap_or_else(|p| p.into_inner()) =
            AgentReply::ok(json!({ "pad": "p".repeat(472) }));
        let before_latency = Usage::now(&stack, &meter_path).await?;
        println!("\n== Per DAG level, one workflow at a time ({} of each shape, 0.5 KB outputs): a task's agent answering to its dependent's agent call", args.latency_workflows);
        for &shape in &args.shapes {
            calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
            let mut ids = Vec::new();
            for _ in 0..args.latency_workflows {
                let id = submit(&http, &stack.api_url, &shape.workflow(false)).await?;
                wait_until_succeeded(&store, &tenant, &id).await?;
                ids.push(id);
            }
            let gaps = level_gaps(&calls, shape, &ids);
            println!(
                "{shape:<8} p50 {:.0} ms, p99 {:.0} ms ({} dependents)",
                percentile(&gaps, 50.0),
                percentile(&gaps, 99.0),
                gaps.len()
            );
        }
        println!(
            "The emulator's own time per request: {}",
            emulator_request_time(&store, &tenant).await?
        );
        learned += outcomes(
            args.latency_workflows * args.shapes.iter().map(|s| s.tasks().len()).sum::<usize>(),
        );
        wait_until_learned(&store, &tenant, learned).await?;
        let unloaded = Usage::now(&stack, &meter_path)
            .await?
            .since(&before_latency);
        durations = bill::durations(&unloaded);
        println!("Milliseconds billed per invocation, without a backlog (Lambda is billed at these below):");
        for (function, ms) in &durations {
            println!("  {function:<14} {ms:>7.1}");
        }
    }
    let mut runs = Vec::new();
    for &shape in &args.shapes {
        for &output_bytes in &args.output_bytes {
            *reply.lock().unwrap_or_else(|p| p.into_inner()) = if args.stream {
                AgentReply::streamed(
                    true,
                    &streamed_parts(output_bytes),
                    Duration::from_millis(20),
                )
            } else {
                let pad = "p".repeat(output_bytes.saturating_sub(40));
                AgentReply::ok(json!({ "pad": pad }))
            };
            let per_workflow = shape.tasks().len();
            let workflows = args.tasks.div_ceil(per_workflow).max(1);
            let tasks = (workflows * per_workflow) as f64;
            calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
            // The chain is idle: the last run's outcomes are learned.
            let before = Usage::now(&stack, &meter_path).await?;
            let workflow = shape.workflow(args.stream);
            let mut ids = Vec::new();
            for _ in 0..workflows {
                ids.push(submit(&http, &stack.api_url, &workflow).await?);
            }
            for id in &ids {
                wait_until_succeeded(&store, &tenant, id).await?;
            }
            // Learning is off the critical path: wait until every outcome (each attempt's) is
            // learned.
            learned += outcomes(tasks as usize);
            wait_until_learned(&store, &tenant, learned).await?;
            let usage = Usage::now(&stack, &meter_path).await?.since(&before);
            println!(
                "\n== {shape}: {workflows} workflows, {} tasks, outputs of about {output_bytes} bytes{}{}{}",
                tasks as u64,
                if fail_first { "; every first attempt fails and is retried once" } else { "" },
                if args.inline_payloads { "; no payload bucket" } else { "" },
                if args.stream { "; streamed" } else { "" },
            );
            let bill = print_bill(&usage, tasks, "task", &durations);
            let gaps = level_gaps(&calls, shape, &ids);
            println!(
                "Per DAG level, a task's agent answering to its dependent's agent call: p50 {:.0} ms, p99 {:.0} ms ({} dependents)",
                percentile(&gaps, 50.0),
                percentile(&gaps, 99.0),
                gaps.len()
            );
            runs.push(Run {
                shape,
                output_bytes,
                bill,
                gaps,
            });
        }
    }
    print_summary(&runs);
    if args.idle_sweeps > 0 {
        idle_cost(&stack, &meter_path, args.idle_sweeps).await?;
    }
    stack.shutdown().await;
    drop(emulator);
    let _ = std::fs::remove_file(&meter_path);
    Ok(())
}

type Error = Box<dyn std::error::Error>;

/// Submits `workflow` through the API; its id.
async fn submit(http: &reqwest::Client, api_url: &str, workflow: &Value) -> Result<String, Error> {
    let accepted: Value = http
        .post(format!("{api_url}/v1/workflows"))
        .json(workflow)
        .send()
        .await?
        .json()
        .await?;
    let id = accepted["workflow_id"].as_str().ok_or("no workflow id")?;
    Ok(id.to_string())
}

/// Waits until workflow `id` has succeeded, polling the table through a client of its own.
async fn wait_until_succeeded(
    store: &impl WorkflowStore,
    tenant: &baton_types::ids::TenantId,
    id: &str,
) -> Result<(), Error> {
    loop {
        match store.workflow_status(tenant, &id.parse()?).await? {
            Some(WorkflowStatus::Running) => tokio::time::sleep(Duration::from_millis(20)).await,
            Some(WorkflowStatus::Succeeded) => return Ok(()),
            other => return Err(format!("workflow {id} ended {other:?}").into()),
        }
    }
}

/// Waits until the agent's learned stats count `outcomes` outcomes.
async fn wait_until_learned(
    store: &impl LearningStore,
    tenant: &baton_types::ids::TenantId,
    outcomes: u64,
) -> Result<(), Error> {
    loop {
        let stats = store
            .agent_stats(tenant, "work", &["worker".parse()?])
            .await?;
        if stats.get("worker").map_or(0, |s| s.count) >= outcomes {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The emulator's own round trip for a one-item read, p50 and p99 of 200.
async fn emulator_request_time(
    store: &impl WorkflowStore,
    tenant: &baton_types::ids::TenantId,
) -> Result<String, Error> {
    let mut times = Vec::new();
    let missing = "no-such-workflow".parse()?;
    for _ in 0..200 {
        let started = Instant::now();
        store.workflow_status(tenant, &missing).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(format!(
        "p50 {:.1} ms, p99 {:.1} ms (a GetItem)",
        percentile(&times, 50.0),
        percentile(&times, 99.0)
    ))
}

fn print_summary(runs: &[Run]) {
    println!("\n== Per task, by shape and output size ($ per 1M tasks at list prices; prices in crates/baton-bench/src/bill.rs)");
    println!(
        "{:<8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>10} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "shape",
        "output",
        "WU",
        "index",
        "RU",
        "SQS",
        "λ",
        "GB-s",
        "API",
        "$ Dynamo",
        "$ SQS",
        "$ λ",
        "$ total",
        "level p50/p99"
    );
    for run in runs {
        let (bill, dollars) = (&run.bill, run.bill.dollars());
        println!(
            "{:<8} {:>7} {:>7.2} {:>7.2} {:>6.2} {:>6.2} {:>6.2} {:>10.6} {:>5.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>5.0}/{:.0} ms",
            run.shape.to_string(),
            run.output_bytes,
            bill.write_units(),
            bill.index_write_units,
            bill.read_units,
            bill.sqs_requests,
            bill.lambda_invocations,
            bill.gb_seconds,
            bill.api_requests,
            dollars.dynamodb,
            dollars.sqs,
            dollars.lambda,
            dollars.total(),
            percentile(&run.gaps, 50.0),
            percentile(&run.gaps, 99.0),
        );
    }
}

/// Long polls of 20 s that Lambda's pollers keep open on each mapped queue when it is empty.
/// AWS does not publish the idle poll rate; five pollers per queue is what a mapping starts
/// with.
const IDLE_POLLERS_PER_QUEUE: f64 = 5.0;
const SECONDS_PER_MONTH: f64 = 30.0 * 24.0 * 3600.0;

/// The cost per month of a deployment with no traffic: the mappings' empty long polls over
/// every queue, and the scheduled sweep, measured over `sweeps` sweeps of the idle stack.
async fn idle_cost(
    stack: &LocalStack,
    meter: &std::path::Path,
    sweeps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let template = Template::load(&project_root().join("template.yaml"))?;
    let mut mapped_queues = 0;
    let mut schedule_s = None;
    for function in template.functions.values() {
        for event in &function.events {
            match event {
                EventSpec::Sqs { .. } => mapped_queues += 1,
                EventSpec::Schedule { every_s } => schedule_s = Some(*every_s),
                EventSpec::HttpApi => {}
            }
        }
    }
    let before = Usage::now(stack, meter).await?;
    for _ in 0..sweeps {
        stack.sweep_once().await?;
    }
    let usage = Usage::now(stack, meter).await?.since(&before);
    // The event-source stand-ins' own polls are not the deployment's: modelled below.
    let mut sweep_usage = usage.clone();
    sweep_usage
        .calls
        .retain(|k, _| !k.starts_with("sqs.ReceiveMessage"));
    sweep_usage.invocations.retain(|k, _| *k == "cleanup");
    println!("\n== Idle: one scheduled sweep, with one agent registered and nothing running");
    let sweep = print_bill(
        &sweep_usage,
        sweeps as f64,
        "sweep",
        &bill::Durations::new(),
    );
    let sweeps_per_month = schedule_s.map_or(0.0, |s| SECONDS_PER_MONTH / s as f64);
    let polls_per_month = mapped_queues as f64 * IDLE_POLLERS_PER_QUEUE * SECONDS_PER_MONTH / 20.0;
    let sweep_dollars = sweep.dollars().total() * sweeps_per_month / 1e6;
    let poll_dollars = polls_per_month * prices::SQS_REQUEST / 1e6;
    println!(
        "Idle cost per month: {mapped_queues} mapped queues x {IDLE_POLLERS_PER_QUEUE} long polls of 20 s = {:.0} empty receives, ${poll_dollars:.2}; \
         {sweeps_per_month:.0} sweeps, ${sweep_dollars:.2}; total ${:.2}",
        polls_per_month,
        poll_dollars + sweep_dollars
    );
    Ok(())
}
