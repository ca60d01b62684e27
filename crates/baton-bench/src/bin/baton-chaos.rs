//! The chaos benchmark: many workflows through the whole chain while everything goes wrong,
//! then an audit of what must always hold, and the figures.
//!
//! The handlers run in a `baton-local run` process of their own, against the emulator through
//! the fault-injecting proxy (duplicate SQS sends, DynamoDB writes whose response is lost,
//! throttling, an outage). Mid-run that process is killed with SIGKILL and started again on
//! the same emulator. The agents fail 20 % of their calls with a 5xx and let 5 % time out.
//! A benchmark: it reports numbers and asserts nothing about time.
//!
//! Usage: baton-chaos [--workflows 1000] [--concurrency 20] [--kill-after 30] …   (--help)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use baton_aws::dynamo::keys::{workflow_sweep_partition, LEASE_SHARDS, SWEEPS_INDEX};
use baton_aws::telemetry::AwsClients;
use baton_chain::store::WorkflowStore;
use baton_local::agents::AgentServer;
use baton_local::chaos::{self, AGENT_FAULTS};
use baton_local::emulator::{free_port, sdk_config, Emulator};
use baton_local::faults::{FaultPlan, FaultProxy};
use baton_local::project_root;
use clap::Parser;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const PREFIX: &str = "chaos";
const TENANT: &str = "default";

#[derive(Debug, Parser)]
#[command(
    name = "baton-chaos",
    about = "The chaos benchmark: workflows under faults, audited"
)]
struct Args {
    /// Workflows to run (five tasks each).
    #[arg(long, default_value_t = 1000)]
    workflows: usize,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    /// Seed of the fault proxy and the agents.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Seconds after the first submission when the handler process is killed with SIGKILL
    /// (and started again).
    #[arg(long, default_value_t = 30)]
    kill_after: u64,
    /// Seconds after the first submission when the emulator becomes unreachable.
    #[arg(long, default_value_t = 60)]
    outage_after: u64,
    /// How long the outage lasts, in seconds.
    #[arg(long, default_value_t = 3)]
    outage: u64,
    /// Share of SQS sends duplicated.
    #[arg(long, default_value_t = 0.10)]
    duplicate_sends: f64,
    /// Share of DynamoDB writes whose response is lost.
    #[arg(long, default_value_t = 0.02)]
    lost_responses: f64,
    /// Share of DynamoDB requests throttled.
    #[arg(long, default_value_t = 0.02)]
    throttling: f64,
    /// Give up waiting for workflows to finish after this many seconds.
    #[arg(long, default_value_t = 3600)]
    give_up_after: u64,
    /// Settings for the handlers, as `baton-local run --set` takes them (default: the
    /// template's own).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    settings: Vec<String>,
    /// Period of the cleanup sweep in seconds (default: the template's schedule).
    #[arg(long)]
    sweep_every: Option<f64>,
}

/// The handler process: `baton-local run` on the proxy.
struct Handlers {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Handlers {
    async fn start(
        args: &Args,
        proxy: &str,
        port: u16,
        log: PathBuf,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let binary = std::env::current_exe()?.with_file_name("baton-local");
        let mut command = Command::new(&binary);
        command
            .args([
                "run",
                "--no-examples",
                "--prefix",
                PREFIX,
                "--port",
                &port.to_string(),
                // Heavy load: two batches of route and learn at once, as Lambda scales out.
                "--pollers",
                "2",
            ])
            .env("AWS_ENDPOINT_URL", proxy)
            .env("RUST_LOG", "warn,aws_smithy_runtime=error,aws_config=error")
            .stdin(Stdio::null());
        for setting in &args.settings {
            command.args(["--set", setting]);
        }
        if let Some(every) = args.sweep_every {
            command.args(["--sweep-every", &every.to_string()]);
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        command.stdout(out.try_clone()?).stderr(out);
        let child = command.spawn().map_err(|e| {
            format!(
                "{}: {e} (build it: cargo build -p baton-local)",
                binary.display()
            )
        })?;
        let handlers = Handlers { child, port, log };
        handlers.wait_ready().await?;
        Ok(handlers)
    }

    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) -> Result<(), Box<dyn std::error::Error>> {
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(r) = http.get(format!("{}/health", self.api())).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the handler process did not come up; see {}",
            self.log.display()
        )
        .into())
    }
}

/// How one submission went.
enum Submitted {
    Accepted {
        id: String,
    },
    /// An error answer: the workflow must not run.
    Refused,
    /// No answer (the handler process was down): it may or may not have been stored.
    Unanswered,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let root = project_root();
    let emulator = Emulator::start(&root)?;
    let proxy = FaultProxy::start(emulator.endpoint(), FaultPlan::default()).await?;
    let log = root.join("target/baton-chaos-handlers.log");
    let _ = std::fs::remove_file(&log);
    let port = free_port()?;
    let mut handlers = Handlers::start(&args, proxy.endpoint(), port, log.clone()).await?;
    let api = handlers.api();
    let http = baton_cli::tenant_client(baton_cli::LOCAL_TENANT)
        .timeout(Duration::from_secs(30))
        .build()?;

    let mut agents = Vec::new();
    for (i, name) in ["left", "right"].iter().enumerate() {
        let server =
            AgentServer::start(chaos::summing_agent(AGENT_FAULTS, args.seed + i as u64)).await?;
        let registered = http
            .post(format!("{api}/v1/agents"))
            .json(&json!({ "name": name, "endpoint": server.url, "capabilities": ["sum"], "timeout_ms": 1000 }))
            .send()
            .await?;
        if !registered.status().is_success() {
            return Err(format!("registering {name}: {}", registered.text().await?).into());
        }
        agents.push(server);
    }
    proxy.set_plan(FaultPlan {
        seed: args.seed,
        duplicate_send_rate: args.duplicate_sends,
        lost_write_response_rate: args.lost_responses,
        throttle_rate: args.throttling,
    });

    println!(
        "Chaos benchmark: {} workflows of {} tasks; handlers in pid {:?}, logs in {}",
        args.workflows,
        chaos::TASKS.len(),
        handlers.child.id(),
        log.display()
    );
    let started = Instant::now();
    let progress = ProgressBar::new(args.workflows as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    // Submissions, with the kill and the outage on their own clock.
    let submissions = futures::stream::iter(0..args.workflows)
        .map(|i| {
            let (http, api) = (http.clone(), api.clone());
            async move { submit_until_accepted(&http, &api, i).await }
        })
        .buffer_unordered(args.concurrency.max(1));
    tokio::pin!(submissions);
    let mut accepted: Vec<(String, i64)> = Vec::new();
    let mut refused: HashSet<String> = HashSet::new();
    let mut unanswered: HashSet<String> = HashSet::new();
    let mut killed = false;
    let mut outage = false;
    let kill_at = started + Duration::from_secs(args.kill_after);
    let outage_at = started + Duration::from_secs(args.outage_after);
    let store = AwsClients::new(&sdk_config(emulator.endpoint()), None);
    let settings = store_settings()?;
    let workflows = store.store(&settings);
    let mut submitted = 0;
    let mut last_report = Instant::now();
    loop {
        let now = Instant::now();
        if !killed && now >= kill_at {
            killed = true;
            say(
                &progress,
                format!(
                    "{:>6.1}s SIGKILL the handler process",
                    started.elapsed().as_secs_f64()
                ),
            );
            handlers.child.start_kill()?;
            handlers.child.wait().await?;
            handlers = Handlers::start(&args, proxy.endpoint(), port, log.clone()).await?;
            say(
                &progress,
                format!(
                    "{:>6.1}s handler process restarted",
                    started.elapsed().as_secs_f64()
                ),
            );
        }
        if !outage && now >= outage_at {
            outage = true;
            proxy.outage(Duration::from_secs(args.outage));
            say(
                &progress,
                format!(
                    "{:>6.1}s the emulator is unreachable for {} s",
                    started.elapsed().as_secs_f64(),
                    args.outage
                ),
            );
        }
        if submitted < args.workflows {
            tokio::select! {
                next = submissions.next() => match next {
                    Some(outcomes) => {
                        submitted += 1;
                        for (name, outcome) in outcomes {
                            match outcome {
                                Submitted::Accepted { id } => accepted.push((id, baton_types::clock::now_ms())),
                                Submitted::Refused => { refused.insert(name); }
                                Submitted::Unanswered => { unanswered.insert(name); }
                            }
                        }
                        progress.set_message(format!("submitted {submitted}"));
                    }
                    None => submitted = args.workflows,
                },
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            continue;
        }
        let running = running_workflows(&store, &settings.state_table)
            .await
            .unwrap_or(usize::MAX);
        progress.set_position((accepted.len().saturating_sub(running.min(accepted.len()))) as u64);
        progress.set_message(format!("{running} running"));
        // Without a terminal the bar is hidden: a line a minute shows the run is alive.
        if progress.is_hidden() && last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            say(
                &progress,
                format!(
                    "{:>6.1}s {running} of {} workflows still running",
                    started.elapsed().as_secs_f64(),
                    accepted.len()
                ),
            );
        }
        if running == 0 && killed && outage {
            break;
        }
        if started.elapsed() > Duration::from_secs(args.give_up_after) {
            say(
                &progress,
                "giving up: some workflows are still running".into(),
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    progress.finish_and_clear();
    let wall = started.elapsed();
    // Nothing moves while the audit reads: an attempt in flight would read as a call without
    // a claim.
    handlers.child.start_kill()?;
    handlers.child.wait().await?;

    // The audit: accepted workflows, and those whose submission got no answer but were stored.
    let stored = stored_workflow_names(&store, &settings.state_table).await?;
    let refused_but_ran = refused
        .iter()
        .filter(|name| stored.contains_key(*name))
        .count();
    let mut ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    ids.extend(
        unanswered
            .iter()
            .filter_map(|name| stored.get(name).cloned()),
    );
    let mut views = Vec::with_capacity(ids.len());
    let mut finish_times = Vec::new();
    // Final after the last attempt ended: what recovery adds, whatever the attempts were.
    let mut after_last_attempt = Vec::new();
    // Why failed workflows failed: the kinds of their failed tasks.
    let mut failure_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let view = workflows.workflow(&TENANT.parse()?, &id.parse()?).await?;
        if let Some(view) = &view {
            let w = &view.workflow;
            if let Some(finished) = w.finished_at_ms {
                finish_times.push((id.clone(), w.created_at_ms, finished));
                let last_attempt_end = view
                    .tasks
                    .iter()
                    .flat_map(|t| t.attempts.iter().map(|a| a.finished_at_ms))
                    .max();
                if let Some(ended) = last_attempt_end {
                    after_last_attempt.push(finished - ended);
                }
            }
            for failure in view.tasks.iter().filter_map(|t| t.failure.as_ref()) {
                let kind = serde_json::to_value(failure.kind).unwrap_or_default();
                *failure_kinds
                    .entry(kind.as_str().unwrap_or("unknown").to_string())
                    .or_default() += 1;
            }
        }
        views.push(view.as_ref().map(|v| {
            serde_json::to_value(baton_orchestrate::workflows::detail(v)).unwrap_or_default()
        }));
    }
    let calls: Vec<_> = agents.iter().flat_map(AgentServer::calls).collect();
    let audit = chaos::audit(&views, &calls);
    let mut last_call: HashMap<&str, i64> = HashMap::new();
    for call in &calls {
        let workflow = call.body["workflow_id"].as_str().unwrap_or_default();
        let at = last_call.entry(workflow).or_default();
        *at = (*at).max(call.at_ms);
    }
    let to_final: Vec<i64> = finish_times
        .iter()
        .map(|(_, created, finished)| finished - created)
        .collect();
    let after_last_call: Vec<i64> = finish_times
        .iter()
        .filter_map(|(id, _, finished)| last_call.get(id.as_str()).map(|at| finished - at))
        .collect();
    let faults = proxy.report();

    println!(
        "\nChaos benchmark: {} workflows, {} tasks, in {:.0} s\n",
        ids.len(),
        ids.len() * chaos::TASKS.len(),
        wall.as_secs_f64()
    );
    let rows = [
        ("lost", audit.lost),
        ("stuck (not final at the end)", audit.stuck),
        ("duplicated agent calls", audit.duplicated_calls),
        ("tasks run twice", audit.double_runs),
        ("wrong dependency data", audit.bad_data),
        ("finished with unfinished tasks", audit.inconsistent),
        ("refused submissions that ran", refused_but_ran),
        ("succeeded", audit.succeeded),
        ("failed", audit.failed),
    ];
    for (name, value) in rows {
        println!("{name:<40} {value:>8}");
    }
    println!(
        "\nTime to a final state (submission to finish): {}",
        quantiles(&to_final)
    );
    println!(
        "Final after the workflow's last agent call:     {}",
        quantiles(&after_last_call)
    );
    println!(
        "Final after its last attempt ended:             {}",
        quantiles(&after_last_attempt)
    );
    if !failure_kinds.is_empty() {
        let kinds: Vec<String> = failure_kinds
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        println!("Task failures by kind: {}", kinds.join(", "));
    }
    println!(
        "\nAgent calls {}, attempts {}, lease re-claims {}",
        audit.agent_calls, audit.attempts, audit.lease_expirations
    );
    println!(
        "Faults injected: {} duplicated SQS sends, {} lost DynamoDB write responses, {} throttled requests, \
         {} requests dropped by a {} s outage, 1 SIGKILL of the handler process, agents failing {:.0} % (5xx) and \
         timing out {:.0} % of calls; {} submissions refused, {} unanswered (retried as new workflows)",
        faults.duplicated_sends,
        faults.lost_responses,
        faults.throttled,
        faults.outage_drops,
        args.outage,
        AGENT_FAULTS.server_error_rate * 100.0,
        AGENT_FAULTS.timeout_rate * 100.0,
        refused.len(),
        unanswered.len()
    );
    println!("Proxy requests: {}", faults.requests);
    if !audit.holds() || refused_but_ran > 0 {
        println!("\nThe audit found violations: {audit:#?}");
        std::process::exit(1);
    }
    Ok(())
}

/// Submits workflow `i` until it is accepted: a refused or unanswered submission is tried
/// again as a new workflow, as a client would. Returns every try's name and outcome.
async fn submit_until_accepted(
    http: &reqwest::Client,
    api: &str,
    i: usize,
) -> Vec<(String, Submitted)> {
    let mut outcomes = Vec::new();
    for attempt in 0.. {
        let name = format!("chaos-{i}-{attempt}");
        let body = chaos::workflow(&name, "sum");
        let outcome = match http
            .post(format!("{api}/v1/workflows"))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 202 => match r.json::<Value>().await {
                Ok(v) => Submitted::Accepted {
                    id: v["workflow_id"].as_str().unwrap_or_default().to_string(),
                },
                Err(_) => Submitted::Unanswered,
            },
            Ok(_) => Submitted::Refused,
            Err(_) => Submitted::Unanswered,
        };
        let done = matches!(outcome, Submitted::Accepted { .. });
        outcomes.push((name, outcome));
        if done || attempt >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200 * (attempt as u64 + 1).min(10))).await;
    }
    outcomes
}

/// The stack's table names, as the handler process provisioned them; the audit reads them
/// straight from the emulator, past the fault proxy.
fn store_settings() -> Result<baton_chain::config::Settings, baton_chain::config::ConfigError> {
    let table = |id: &str| format!("{PREFIX}-{id}");
    baton_chain::config::Settings::from_lookup(|name| match name {
        "STATE_TABLE" => Some(table("StateTable")),
        "MEMORY_TABLE" => Some(table("MemoryTable")),
        "ROUTE_QUEUE_URL" | "EXECUTE_QUEUE_URL" | "LEARN_QUEUE_URL" => Some("unused".into()),
        _ => None,
    })
}

/// Workflows still running, from the sweeps index (no scan).
async fn running_workflows(
    clients: &AwsClients,
    table: &str,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut count = 0;
    for shard in 0..LEASE_SHARDS {
        let mut start = None;
        loop {
            let out = clients
                .dynamodb
                .query()
                .table_name(table)
                .index_name(SWEEPS_INDEX)
                .key_condition_expression("sweep_shard = :s")
                .expression_attribute_values(
                    ":s",
                    AttributeValue::S(workflow_sweep_partition(shard)),
                )
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            count += out.count as usize;
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
    }
    Ok(count)
}

/// Every stored workflow's name and id (one scan, at the end).
async fn stored_workflow_names(
    clients: &AwsClients,
    table: &str,
) -> Result<HashMap<String, String>, Box<dyn std::error::Error>> {
    let mut names = HashMap::new();
    let mut start = None;
    loop {
        let out = clients
            .dynamodb
            .scan()
            .table_name(table)
            .filter_expression("sk = :w")
            .expression_attribute_values(":w", AttributeValue::S("WORKFLOW".into()))
            .set_exclusive_start_key(start)
            .send()
            .await?;
        for item in out.items.unwrap_or_default() {
            if let (Some(Ok(name)), Some(Ok(id))) = (
                item.get("name").map(|v| v.as_s()),
                item.get("workflow_id").map(|v| v.as_s()),
            ) {
                names.insert(name.clone(), id.clone());
            }
        }
        start = out.last_evaluated_key;
        if start.is_none() {
            return Ok(names);
        }
    }
}

/// Prints an event of the run above the progress bar (which is hidden without a terminal).
fn say(progress: &ProgressBar, line: String) {
    progress.suspend(|| println!("{line}"));
}

/// "p50 … p99 … max …" of durations in milliseconds.
fn quantiles(values: &[i64]) -> String {
    if values.is_empty() {
        return "no data".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    format!(
        "p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}
