//! Whether one tenant's backlog delays another tenant's work, on the local stack. A benchmark:
//! it reports numbers and asserts nothing about time.
//!
//! Usage: baton-fairness-bench [--backlog N] [--b-workflows N] [--agent-latency-ms MS]
//!        [--pace N] [--burst N] [--phase both|before|after] [--timeout-s S] [--no-sweep]
//!
//! Two tenants, `a` and `b`, each with its own agent (capability `work`, answering after
//! `--agent-latency-ms`) in its own registry. Tenant `a` submits a backlog of `--backlog`
//! independent tasks, as workflows of at most 500 tasks submitted back to back; right after,
//! tenant `b` submits `--b-workflows` single-task workflows one at a time, each once the one
//! before has ended. Both run to the end. The benchmark runs this twice, each phase on a fresh
//! emulator and stack:
//!
//! - **before**: every tenant's pace is huge (1,000,000 tasks/s, burst 1,000,000, backlog
//!   10,000,000, through the stack's environment), so pacing is off in effect and `a`'s whole
//!   backlog reaches the queues at once;
//! - **after**: the operator sets tenant `a`'s pace to `--pace` tasks/s with `--burst` tasks at
//!   once (`PUT /v1/tenants/a/quotas`); `b` keeps the template's defaults. `a`'s tasks beyond
//!   its burst wait for their turn in SQS's delay, not in front of `b`'s.
//!
//! A task's **queue wait** is the time from its workflow's submission (when the client sent
//! `POST /v1/workflows`) to the moment its agent received the first call for it, both on this
//! machine's clock. The table gives each tenant's waits (p50, p90, p99, max, in seconds) and
//! each phase's wall time, from a's first submission to the end of every workflow.
//!
//! How to read it: `b`'s wait is what one tenant's backlog costs another. Because `b` submits
//! one workflow at a time, only its first workflow meets whatever `a` has queued; the later
//! ones run beside what is left. So `b`'s max (and, with 30 workflows, its p99) is the telling
//! number, and the line of `b`'s waits in submission order shows where they fall. Unfair, the
//! first waits about as long as the stack needs to work through `a`'s backlog; fair, it stays
//! near the time a busy stack takes to start a task, whatever `a` queued. `a`'s own waits and
//! throughput show what its pace costs it: paced below what the stack can execute (the
//! "before" throughput is that capacity), `a` runs at its pace and its last task starts about
//! `backlog / pace` seconds after its submission.
//!
//! The stack is the template's, cleanup sweep included unless `--no-sweep` (tasks queued longer
//! than the dispatch time-out are sent again; a task sent `MAX_DISPATCHES` times fails
//! `not_dispatched`): tasks that did not succeed are listed under the table. A note says when
//! `a`'s last task started well after its turn, i.e. when the stack did not keep `a`'s pace.
//! The local stack runs on moto, which does not emulate SQS fair queues (`MessageGroupId` per
//! tenant), so only Baton's pacing acts here; in AWS both do.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_local::agents::{AgentReply, AgentServer, ReceivedCall};
use baton_local::emulator::Emulator;
use baton_local::project_root;
use baton_local::stack::{LocalStack, StackOptions};
use baton_types::clock::{now_ms, parse_rfc3339};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

/// The most tasks one workflow may hold.
const MAX_WORKFLOW_TASKS: usize = 500;
/// The pace, burst and backlog of every tenant "before": far beyond what the stack executes.
const UNPACED_RATE: &str = "1000000";
const UNPACED_BURST: &str = "1000000";
const UNPACED_BACKLOG: &str = "10000000";
/// The template's default backlog quota; "after" raises `a`'s to `--backlog` if that is more.
const DEFAULT_TASK_BACKLOG: usize = 20_000;
const TENANT_A: &str = "a";
const TENANT_B: &str = "b";
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const A_POLL: Duration = Duration::from_secs(1);
const B_POLL: Duration = Duration::from_millis(50);
const FINAL_STATUSES: [&str; 3] = ["succeeded", "failed", "cancelled"];
/// How far behind its last turn a's last task may start before the report says the stack did
/// not keep a's pace (SQS delays are whole seconds, and a task takes a hop or two to start).
const BEHIND_PACE_MS: i64 = 5_000;

#[derive(Debug, Parser)]
#[command(
    name = "baton-fairness-bench",
    about = "Tenant b's queue wait behind tenant a's backlog, without and with a's pace"
)]
struct Args {
    /// Tasks tenant a submits at once (in workflows of at most 500 independent tasks).
    #[arg(long, default_value_t = 3000)]
    backlog: usize,
    /// Single-task workflows tenant b submits, one at a time.
    #[arg(long, default_value_t = 30)]
    b_workflows: usize,
    /// How long each agent takes per call.
    #[arg(long, default_value_t = 20)]
    agent_latency_ms: u64,
    /// Tenant a's pace "after", in tasks per second.
    #[arg(long, default_value_t = 8.0)]
    pace: f64,
    /// Tasks tenant a dispatches at once "after", before its pace applies.
    #[arg(long, default_value_t = 20)]
    burst: u32,
    /// Which phases to run.
    #[arg(long, value_enum, default_value_t = Phases::Both)]
    phase: Phases,
    /// The longest a phase may take once submitted, in seconds.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    /// Runs without the cleanup sweep (the template runs it every minute; its reads of every
    /// running workflow compete with the chain for the emulator).
    #[arg(long)]
    no_sweep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phases {
    Both,
    Before,
    After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    After,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::After => "after",
        }
    }
}

type BenchError = Box<dyn std::error::Error>;

/// One submitted workflow, as the client saw it.
#[derive(Debug)]
struct Submitted {
    id: String,
    sent_ms: i64,
    tasks: usize,
    /// `pacing` of the answer, when some of its tasks were paced.
    pacing: Option<Value>,
}

/// One tenant's figures in one phase.
#[derive(Debug, Default)]
struct TenantResult {
    submitted: usize,
    /// Refused submissions (429), with the API's message.
    refused: Vec<String>,
    /// Queue wait of every task that started, in milliseconds, sorted.
    waits_ms: Vec<i64>,
    /// Per workflow, in submission order: the wait of its first task to start.
    first_waits_ms: Vec<Option<i64>>,
    /// Tasks by final status (`succeeded`, `failed`, ...), and failures by kind.
    statuses: HashMap<String, usize>,
    errors: HashMap<String, usize>,
    /// From the first submission to the last workflow's end.
    span_ms: i64,
    /// Paced tasks and the last turn, after the first submission, as the answers told.
    paced_tasks: u64,
    last_turn_ms: Option<i64>,
    /// When the last task started, after the first submission.
    last_start_ms: Option<i64>,
}

struct PhaseResult {
    phase: Phase,
    a: TenantResult,
    b: TenantResult,
    wall: Duration,
}

#[tokio::main]
async fn main() -> Result<(), BenchError> {
    let args = Args::parse();
    if args.backlog == 0 || args.b_workflows == 0 {
        return Err("--backlog and --b-workflows must be at least 1".into());
    }
    let started = Instant::now();
    let phases: &[Phase] = match args.phase {
        Phases::Both => &[Phase::Before, Phase::After],
        Phases::Before => &[Phase::Before],
        Phases::After => &[Phase::After],
    };
    println!(
        "Tenant a: {} tasks in {} workflow(s); tenant b: {} single-task workflows, one at a time; \
         the agents take {} ms per call",
        args.backlog,
        args.backlog.div_ceil(MAX_WORKFLOW_TASKS),
        args.b_workflows,
        args.agent_latency_ms
    );
    let mut results = Vec::new();
    for &phase in phases {
        results.push(run_phase(phase, &args).await?);
    }
    report(&args, &results);
    println!(
        "  total wall time: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One phase on a fresh emulator and stack.
async fn run_phase(phase: Phase, args: &Args) -> Result<PhaseResult, BenchError> {
    println!();
    let emulator = Emulator::start(&project_root())?;
    let mut options = StackOptions::new(format!("baton-fairness-{}", phase.name()));
    if phase == Phase::Before {
        for (name, value) in [
            ("BATON_QUOTA_TASKS_PER_SECOND", UNPACED_RATE),
            ("BATON_QUOTA_TASK_BURST", UNPACED_BURST),
            ("BATON_QUOTA_TASK_BACKLOG", UNPACED_BACKLOG),
        ] {
            options.env_overrides.insert(name.into(), value.into());
        }
    }
    if args.no_sweep {
        options.sweep_every = Some(Duration::ZERO);
    }
    let stack = LocalStack::start_on_emulator(emulator.endpoint(), options).await?;
    let api = stack.api_url.clone();
    let delay = Duration::from_millis(args.agent_latency_ms);
    let behaviour = Arc::new(move |_: &Value| AgentReply::ok(json!({ "done": true })).after(delay));
    let agent_a = AgentServer::start(behaviour.clone()).await?;
    let agent_b = AgentServer::start(behaviour).await?;
    let http_a = baton_cli::tenant_client(TENANT_A).build()?;
    let http_b = baton_cli::tenant_client(TENANT_B).build()?;
    register(&http_a, &api, &agent_a).await?;
    register(&http_b, &api, &agent_b).await?;
    match phase {
        Phase::Before => println!(
            "before: every tenant's pace {UNPACED_RATE} tasks/s, burst {UNPACED_BURST}, backlog \
             {UNPACED_BACKLOG} (pacing off in effect)"
        ),
        Phase::After => {
            let a_quotas = set_pace(&api, args).await?;
            let b_quotas = get_json(&http_b, &format!("{api}/v1/quotas")).await?["quotas"].clone();
            println!(
                "after: tenant a's pace {} tasks/s, burst {}, backlog {} (set by the operator); \
                 tenant b's {} tasks/s, burst {} (the template's defaults)",
                a_quotas["tasks_per_second"],
                a_quotas["task_burst"],
                a_quotas["task_backlog"],
                b_quotas["tasks_per_second"],
                b_quotas["task_burst"]
            );
        }
    }

    let phase_started = Instant::now();
    let deadline = phase_started + Duration::from_secs(args.timeout_s);
    let mut a = TenantResult::default();
    let mut a_workflows = Vec::new();
    let mut offset = 0;
    while offset < args.backlog {
        let size = (args.backlog - offset).min(MAX_WORKFLOW_TASKS);
        let tasks: Vec<Value> = (offset..offset + size)
            .map(|i| json!({ "id": format!("t{i}"), "capability": "work" }))
            .collect();
        let name = format!("backlog-{}", a_workflows.len() + a.refused.len());
        let body = json!({ "name": name, "tasks": tasks });
        match submit(&http_a, &api, &body, size).await? {
            Ok(submitted) => a_workflows.push(submitted),
            Err(refusal) => a.refused.push(refusal),
        }
        offset += size;
        println!(
            "  a: {offset}/{} tasks submitted at {:.1} s",
            args.backlog,
            phase_started.elapsed().as_secs_f64()
        );
    }
    a.submitted = a_workflows.iter().map(|w| w.tasks).sum();
    if !a.refused.is_empty() {
        println!(
            "  tenant a: {} submission(s) refused, its backlog quota is too small: {}",
            a.refused.len(),
            a.refused[0]
        );
    }
    println!(
        "  tenant a submitted {} tasks in {:.1} s",
        a.submitted,
        phase_started.elapsed().as_secs_f64()
    );

    let b_done = AtomicUsize::new(0);
    let b_stopped = AtomicBool::new(false);
    let (b_run, a_statuses) = tokio::join!(
        async {
            let run = run_b(&http_b, &api, args.b_workflows, deadline, &b_done).await;
            b_stopped.store(true, Ordering::Relaxed);
            run
        },
        watch(
            &http_a,
            &api,
            &a_workflows,
            a.submitted,
            &agent_a,
            deadline,
            (&b_done, &b_stopped, args.b_workflows),
        ),
    );
    let (b_workflows, b_views) = b_run?;
    let a_summaries = a_statuses?;
    let wall = phase_started.elapsed();

    // The details of a's workflows, once, for its tasks' outcomes.
    let mut a_views = Vec::new();
    for workflow in &a_workflows {
        a_views.push(get_json(&http_a, &format!("{api}/v1/workflows/{}", workflow.id)).await?);
    }
    fill(&mut a, &a_workflows, &a_views, &agent_a.calls());
    a.span_ms = span_ms(&a_workflows, a_summaries.values())?;
    let mut b = TenantResult {
        submitted: b_workflows.len(),
        ..TenantResult::default()
    };
    fill(&mut b, &b_workflows, &b_views, &agent_b.calls());
    b.span_ms = span_ms(&b_workflows, b_views.iter())?;
    println!(
        "  {}: everything ended in {:.1} s",
        phase.name(),
        wall.as_secs_f64()
    );
    stack.shutdown().await;
    drop(emulator);
    Ok(PhaseResult { phase, a, b, wall })
}

async fn register(
    http: &reqwest::Client,
    api: &str,
    agent: &AgentServer,
) -> Result<(), BenchError> {
    let registered = http
        .post(format!("{api}/v1/agents"))
        .json(&json!({ "name": "worker", "endpoint": agent.url, "capabilities": ["work"] }))
        .send()
        .await?;
    if !registered.status().is_success() {
        return Err(format!("agent registration failed: {}", registered.text().await?).into());
    }
    Ok(())
}

/// Sets tenant a's pace as the operator; answers the quotas in effect.
async fn set_pace(api: &str, args: &Args) -> Result<Value, BenchError> {
    let operator = baton_cli::tenant_client("operator").build()?;
    let answer = operator
        .put(format!("{api}/v1/tenants/{TENANT_A}/quotas"))
        .header("x-baton-scopes", "baton/operator")
        .json(&json!({
            "tasks_per_second": args.pace,
            "task_burst": args.burst,
            "task_backlog": args.backlog.max(DEFAULT_TASK_BACKLOG),
        }))
        .send()
        .await?;
    let status = answer.status();
    let body: Value = answer.json().await?;
    if !status.is_success() {
        return Err(format!("setting tenant a's quotas failed ({status}): {body}").into());
    }
    Ok(body["quotas"].clone())
}

/// Submits a workflow of `tasks` tasks: `Ok(Err(message))` when refused for a quota (429).
async fn submit(
    http: &reqwest::Client,
    api: &str,
    body: &Value,
    tasks: usize,
) -> Result<Result<Submitted, String>, BenchError> {
    let sent_ms = now_ms();
    let answer = http
        .post(format!("{api}/v1/workflows"))
        .json(body)
        .send()
        .await?;
    let status = answer.status();
    let answer: Value = answer.json().await?;
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Ok(Err(answer["message"]
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_string)));
    }
    let id = answer["workflow_id"]
        .as_str()
        .ok_or_else(|| format!("workflow refused ({status}): {answer}"))?;
    Ok(Ok(Submitted {
        id: id.to_string(),
        sent_ms,
        tasks,
        pacing: answer.get("pacing").filter(|p| !p.is_null()).cloned(),
    }))
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, BenchError> {
    let answer = http.get(url).send().await?;
    let status = answer.status();
    let body: Value = answer.json().await?;
    if !status.is_success() {
        return Err(format!("GET {url} answered {status}: {body}").into());
    }
    Ok(body)
}

fn is_final(view: &Value) -> bool {
    view["status"]
        .as_str()
        .is_some_and(|s| FINAL_STATUSES.contains(&s))
}

/// Tenant b: one single-task workflow at a time, the next once the one before has ended.
/// Answers the workflows and their final views.
async fn run_b(
    http: &reqwest::Client,
    api: &str,
    count: usize,
    deadline: Instant,
    done: &AtomicUsize,
) -> Result<(Vec<Submitted>, Vec<Value>), BenchError> {
    let mut workflows = Vec::new();
    let mut views = Vec::new();
    for i in 0..count {
        let body =
            json!({ "name": format!("small-{i}"), "tasks": [{ "id": "t", "capability": "work" }] });
        let submitted = submit(http, api, &body, 1)
            .await?
            .map_err(|refusal| format!("tenant b's workflow refused: {refusal}"))?;
        let url = format!("{api}/v1/workflows/{}", submitted.id);
        let view = loop {
            let view = get_json(http, &url).await?;
            if is_final(&view) {
                break view;
            }
            if Instant::now() > deadline {
                return Err(format!("tenant b's workflow {i} did not end in time").into());
            }
            tokio::time::sleep(B_POLL).await;
        };
        workflows.push(submitted);
        views.push(view);
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok((workflows, views))
}

/// Polls tenant a's workflows (from the list, a page of summaries) until all have ended, and
/// prints progress for both tenants until b has stopped too. Answers a's summaries by id.
async fn watch(
    http: &reqwest::Client,
    api: &str,
    workflows: &[Submitted],
    tasks: usize,
    agent: &AgentServer,
    deadline: Instant,
    (b_done, b_stopped, b_count): (&AtomicUsize, &AtomicBool, usize),
) -> Result<HashMap<String, Value>, BenchError> {
    let ids: HashSet<&str> = workflows.iter().map(|w| w.id.as_str()).collect();
    let mut summaries: HashMap<String, Value> = HashMap::new();
    let mut last_report = Instant::now();
    loop {
        let a_final = summaries.values().filter(|s| is_final(s)).count() == ids.len();
        if !a_final {
            summaries = list_workflows(http, api)
                .await?
                .into_iter()
                .filter(|s| s["workflow_id"].as_str().is_some_and(|id| ids.contains(id)))
                .map(|s| (s["workflow_id"].as_str().unwrap_or_default().to_string(), s))
                .collect();
        }
        let a_ended = summaries.values().filter(|s| is_final(s)).count();
        let b_ended = b_done.load(Ordering::Relaxed);
        let finished = a_ended == ids.len() && b_stopped.load(Ordering::Relaxed);
        if finished || last_report.elapsed() >= PROGRESS_EVERY {
            let started: HashSet<(String, String)> =
                agent.calls().iter().filter_map(task_of).collect();
            println!(
                "  a: {}/{tasks} tasks started, {a_ended}/{} workflows ended; \
                 b: {b_ended}/{b_count} workflows ended",
                started.len(),
                ids.len()
            );
            last_report = Instant::now();
        }
        if finished {
            return Ok(summaries);
        }
        if Instant::now() > deadline {
            return Err("the phase did not end in time (see --timeout-s)".into());
        }
        tokio::time::sleep(A_POLL).await;
    }
}

/// Every workflow of the client's tenant, page by page.
async fn list_workflows(http: &reqwest::Client, api: &str) -> Result<Vec<Value>, BenchError> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        // The cursor is hex: it needs no escaping.
        let url = match &cursor {
            Some(cursor) => format!("{api}/v1/workflows?limit=100&cursor={cursor}"),
            None => format!("{api}/v1/workflows?limit=100"),
        };
        let page = get_json(http, &url).await?;
        all.extend(page["workflows"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(all),
        }
    }
}

/// The (workflow, task) a call was for.
fn task_of(call: &ReceivedCall) -> Option<(String, String)> {
    Some((
        call.body["workflow_id"].as_str()?.to_string(),
        call.body["task_id"].as_str()?.to_string(),
    ))
}

/// Fills a tenant's waits and outcomes from its workflows, their final views and the calls
/// its agent received.
fn fill(
    result: &mut TenantResult,
    workflows: &[Submitted],
    views: &[Value],
    calls: &[ReceivedCall],
) {
    let mut first_call: HashMap<(String, String), i64> = HashMap::new();
    for call in calls {
        if let Some(key) = task_of(call) {
            let at = first_call.entry(key).or_insert(call.at_ms);
            *at = (*at).min(call.at_ms);
        }
    }
    let sent: HashMap<&str, i64> = workflows
        .iter()
        .map(|w| (w.id.as_str(), w.sent_ms))
        .collect();
    let mut first_wait: HashMap<&str, i64> = HashMap::new();
    for ((workflow, _), at) in &first_call {
        if let Some((id, sent)) = sent.get_key_value(workflow.as_str()) {
            let wait = at - sent;
            result.waits_ms.push(wait);
            let first = first_wait.entry(id).or_insert(wait);
            *first = (*first).min(wait);
        }
    }
    result.waits_ms.sort_unstable();
    result.first_waits_ms = workflows
        .iter()
        .map(|w| first_wait.get(w.id.as_str()).copied())
        .collect();
    for view in views {
        for task in view["tasks"].as_array().into_iter().flatten() {
            let status = task["status"].as_str().unwrap_or("unknown").to_string();
            *result.statuses.entry(status).or_default() += 1;
            if let Some(kind) = task["error"]["kind"].as_str() {
                *result.errors.entry(kind.to_string()).or_default() += 1;
            }
        }
    }
    let first_sent = workflows
        .iter()
        .map(|w| w.sent_ms)
        .min()
        .unwrap_or_default();
    result.last_start_ms = first_call.values().max().map(|at| at - first_sent);
    for workflow in workflows {
        if let Some(pacing) = &workflow.pacing {
            result.paced_tasks += pacing["paced_tasks"].as_u64().unwrap_or_default();
            if let Some(last) = pacing["last_start_at"].as_str().and_then(parse_rfc3339) {
                let after = last - first_sent;
                result.last_turn_ms = Some(result.last_turn_ms.map_or(after, |t| t.max(after)));
            }
        }
    }
}

/// From the first submission to the last workflow's end (`finished_at` of its summary or view).
fn span_ms<'a>(
    workflows: &[Submitted],
    ended: impl Iterator<Item = &'a Value>,
) -> Result<i64, BenchError> {
    let first = workflows
        .iter()
        .map(|w| w.sent_ms)
        .min()
        .unwrap_or_default();
    let mut last = first;
    for view in ended {
        let finished = view["finished_at"]
            .as_str()
            .and_then(parse_rfc3339)
            .ok_or_else(|| format!("workflow without finished_at: {}", view["workflow_id"]))?;
        last = last.max(finished);
    }
    Ok(last - first)
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn seconds(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_string(),
        |ms| format!("{:.1}", ms as f64 / 1000.0),
    )
}

fn counts(map: &HashMap<String, usize>) -> String {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort();
    entries
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A tenant's tasks ended per second, from its first submission to its last workflow's end.
fn throughput(result: &TenantResult) -> f64 {
    let ended = result.statuses.values().sum::<usize>();
    ended as f64 * 1000.0 / result.span_ms.max(1) as f64
}

fn report(args: &Args, results: &[PhaseResult]) {
    println!();
    println!(
        "Fairness benchmark: tenant a {} tasks at once, tenant b {} single-task workflows one at \
         a time; agents {} ms; after: a's pace {} tasks/s, burst {}",
        args.backlog, args.b_workflows, args.agent_latency_ms, args.pace, args.burst
    );
    println!("Queue wait: submission to the agent's first call for the task, in seconds");
    println!(
        "  {:<7} {:<6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>11}",
        "phase", "tenant", "tasks", "p50", "p90", "p99", "max", "phase wall"
    );
    for result in results {
        for (tenant, figures) in [(TENANT_A, &result.a), (TENANT_B, &result.b)] {
            let waits = &figures.waits_ms;
            println!(
                "  {:<7} {:<6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>9.1} s",
                result.phase.name(),
                tenant,
                waits.len(),
                seconds(percentile(waits, 50.0)),
                seconds(percentile(waits, 90.0)),
                seconds(percentile(waits, 99.0)),
                seconds(waits.last().copied()),
                result.wall.as_secs_f64()
            );
        }
    }
    println!();
    for result in results {
        let a = &result.a;
        let ended = a.statuses.values().sum::<usize>();
        println!(
            "  {}: tenant a's throughput {:.1} tasks/s ({ended} tasks ended in {:.1} s from its \
             first submission){}",
            result.phase.name(),
            throughput(a),
            a.span_ms as f64 / 1000.0,
            match (a.last_turn_ms, a.last_start_ms) {
                (Some(turn), Some(start)) => format!(
                    "; {} tasks paced, the last turn {:.1} s after the first submission, the \
                     last start {:.1} s",
                    a.paced_tasks,
                    turn as f64 / 1000.0,
                    start as f64 / 1000.0
                ),
                _ => String::new(),
            }
        );
    }
    for result in results {
        let waits: Vec<String> = result
            .b
            .first_waits_ms
            .iter()
            .map(|w| seconds(*w))
            .collect();
        println!(
            "  {}: tenant b's waits in submission order (s): {}",
            result.phase.name(),
            waits.join(" ")
        );
    }
    for result in results {
        for (tenant, figures) in [(TENANT_A, &result.a), (TENANT_B, &result.b)] {
            let tasks = figures.statuses.values().sum::<usize>();
            let succeeded = figures.statuses.get("succeeded").copied().unwrap_or(0);
            let unstarted = figures.submitted.saturating_sub(figures.waits_ms.len());
            if succeeded < figures.submitted || unstarted > 0 || !figures.refused.is_empty() {
                println!(
                    "  {} {tenant}: {} of {} tasks ended as {}{}{}{}",
                    result.phase.name(),
                    tasks,
                    figures.submitted,
                    counts(&figures.statuses),
                    if figures.errors.is_empty() {
                        String::new()
                    } else {
                        format!(" (errors: {})", counts(&figures.errors))
                    },
                    if unstarted > 0 {
                        format!("; {unstarted} never reached the agent")
                    } else {
                        String::new()
                    },
                    if figures.refused.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} submissions refused (429): {}",
                            figures.refused.len(),
                            figures.refused[0]
                        )
                    }
                );
            }
        }
    }
    let after = results.iter().find(|r| r.phase == Phase::After);
    if let Some((turn, start)) = after.and_then(|r| r.a.last_turn_ms.zip(r.a.last_start_ms)) {
        let behind_ms = start - turn;
        if behind_ms > BEHIND_PACE_MS {
            println!(
                "  note: a's last task started {:.1} s after its turn: the stack ran slower than \
                 a's pace at times, and a's due tasks queued in front of b's meanwhile; a lower \
                 --pace (or a quieter machine) keeps b's wait down",
                behind_ms as f64 / 1000.0
            );
        }
    }
    let phase = match results {
        [only] => format!(" --phase {}", only.phase.name()),
        _ => String::new(),
    };
    println!(
        "  reproduce: infra/bench-fairness.sh --backlog {} --b-workflows {} --agent-latency-ms {} \
         --pace {} --burst {}{phase}{}",
        args.backlog,
        args.b_workflows,
        args.agent_latency_ms,
        args.pace,
        args.burst,
        if args.no_sweep { " --no-sweep" } else { "" }
    );
}
