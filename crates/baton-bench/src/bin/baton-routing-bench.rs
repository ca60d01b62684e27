//! How the default `learned` routing strategy behaves end to end, on the local stack with real
//! HTTP agents. A benchmark: it prints figures and asserts nothing.
//!
//! Usage: baton-routing-bench [--tasks N] [--in-flight N] [--seed N] [--poll-ms N]
//!
//! Each agent answers success with a probability the benchmark sets (a seeded random stream
//! per agent), else HTTP 500, after a fixed latency. Every task is a single-task workflow with
//! one attempt, so every task is exactly one routing decision; `--in-flight` workflows run at
//! once, the next submitted as one finishes, so routing learns as it goes. The phases, in the
//! order they run:
//!
//! - **Round robin baseline** (`rb_quality_rr`): the agents below, 200 tasks routed
//!   `round_robin`; its regret is the yardstick for the learned strategy's.
//! - **Convergence** (`rb_quality`): `q-best` p=0.95, `q-mid` p=0.80, `q-low` p=0.60, 20 ms
//!   each; `--tasks` tasks, then 100 more, routed `learned` (the default).
//! - **Degradation**, right after: `q-best` drops to p=0.30; 150 more `rb_quality` tasks.
//! - **Latency** (`rb_speed`): `fast` 30 ms, `medium` 150 ms, `slow` 600 ms, all p=0.95; 300
//!   tasks.
//!
//! The metrics are those of the pure simulation in `crates/baton-types/tests/learned_routing.rs`, whose
//! figures are printed beside them. The agents' circuit breakers are set so they never open:
//! the figures measure learning, not the breaker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_chain::store::LearningStore;
use baton_local::agents::{AgentReply, AgentServer};
use baton_local::emulator::{sdk_config, Emulator};
use baton_local::project_root;
use baton_local::stack::{LocalStack, StackOptions};
use clap::Parser;
use futures::StreamExt;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error>;

const QUALITY: &str = "rb_quality";
const QUALITY_RR: &str = "rb_quality_rr";
const SPEED: &str = "rb_speed";
/// Tasks run after `--tasks` in the convergence phase; the share to the best agent is read
/// over them.
const AFTER_CONVERGENCE: usize = 100;
const ROUND_ROBIN_TASKS: usize = 200;
const DEGRADATION_TASKS: usize = 150;
const LATENCY_TASKS: usize = 300;
/// The latency phase's share to the fastest agent is read after this many tasks.
const LATENCY_WARM_UP: usize = 100;
/// Re-convergence: the end of the first window of this many tasks in which the new best agent
/// takes at least `CONVERGED_IN_WINDOW`.
const WINDOW: usize = 20;
const CONVERGED_IN_WINDOW: usize = 15;
/// Progress is printed every this many finished tasks.
const PROGRESS_EVERY: usize = 50;

#[derive(Debug, Parser)]
#[command(
    name = "baton-routing-bench",
    about = "How the learned routing strategy converges, re-adapts and weighs latency, end to end on the local stack"
)]
struct Args {
    /// Convergence tasks before the share to the best agent is read over the next 100; the
    /// regret is summed over these.
    #[arg(long, default_value_t = 200)]
    tasks: usize,
    /// Workflows (one task each) in flight at once.
    #[arg(long, default_value_t = 2)]
    in_flight: usize,
    /// Seed of the agents' random outcomes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Interval between two polls of a workflow's status, in milliseconds.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
}

/// A benchmark agent: a real HTTP server whose success probability can be changed while it
/// runs.
struct BenchAgent {
    name: &'static str,
    server: AgentServer,
    success: Arc<AtomicU64>,
}

impl BenchAgent {
    async fn start(
        name: &'static str,
        success: f64,
        latency: Duration,
        seed: u64,
    ) -> std::io::Result<Self> {
        let probability = Arc::new(AtomicU64::new(success.to_bits()));
        let read = probability.clone();
        // A seeded random stream per agent: the n-th call this agent answers draws the n-th
        // number of its stream.
        let stream = Mutex::new(SmallRng::seed_from_u64(
            seed ^ baton_types::routing::stable_shard(name, u32::MAX) as u64,
        ));
        let server = AgentServer::start(Arc::new(move |call: &Value| {
            let draw: f64 = stream.lock().map_or(0.0, |mut rng| rng.random());
            let p = f64::from_bits(read.load(Ordering::Relaxed));
            let reply = if draw < p {
                AgentReply::ok(json!({ "task": call["task_id"], "agent": name }))
            } else {
                AgentReply::error(500, "a drawn failure")
            };
            reply.after(latency)
        }))
        .await?;
        Ok(BenchAgent {
            name,
            server,
            success: probability,
        })
    }

    fn p(&self) -> f64 {
        f64::from_bits(self.success.load(Ordering::Relaxed))
    }

    fn set_p(&self, p: f64) {
        self.success.store(p.to_bits(), Ordering::Relaxed);
    }
}

/// Submits single-task workflows and waits for them, over the stack's HTTP API.
struct Client {
    http: reqwest::Client,
    api: String,
    poll: Duration,
}

/// One finished task: the agent it was routed to.
struct Routed {
    workflow_id: String,
    agent: String,
}

impl Client {
    async fn register(&self, agent: &BenchAgent, capabilities: &[&str]) -> Result<(), BoxError> {
        let registered = self
            .http
            .post(format!("{}/v1/agents", self.api))
            .json(&json!({
                "name": agent.name,
                "endpoint": agent.server.url,
                "capabilities": capabilities,
                "timeout_ms": 5_000,
                // The most lenient breaker the validation accepts: it opens only after 100
                // failures in a row, or when all of the last 100 calls failed; and then for
                // one second only.
                "circuit_breaker": {
                    "failure_threshold": 100,
                    "failure_rate": 1.0,
                    "window": 100,
                    "cooldown_s": 1,
                },
            }))
            .send()
            .await?;
        if !registered.status().is_success() {
            return Err(format!(
                "registering {} failed: {}",
                agent.name,
                registered.text().await?
            )
            .into());
        }
        Ok(())
    }

    /// Runs one single-task workflow with one attempt and returns the agent it was routed to.
    async fn run_task(
        &self,
        capability: &str,
        routing: Option<&str>,
        index: usize,
    ) -> Result<Routed, BoxError> {
        let mut task = json!({
            "id": "t",
            "capability": capability,
            "input": { "n": index },
            "retry": { "max_attempts": 1 },
        });
        if let Some(routing) = routing {
            task["routing"] = json!(routing);
        }
        let workflow = json!({ "name": "routing-bench", "tasks": [task] });
        let workflow_id = loop {
            let response = self
                .http
                .post(format!("{}/v1/workflows", self.api))
                .json(&workflow)
                .send()
                .await?;
            let status = response.status().as_u16();
            if status == 429 || status == 503 {
                tokio::time::sleep(self.poll).await;
                continue;
            }
            let body: Value = response.json().await?;
            if status != 202 {
                return Err(format!("submitting a workflow answered {status}: {body}").into());
            }
            break body["workflow_id"]
                .as_str()
                .ok_or("no workflow id")?
                .to_string();
        };
        let view = loop {
            let response = self
                .http
                .get(format!("{}/v1/workflows/{workflow_id}", self.api))
                .send()
                .await?;
            let status = response.status().as_u16();
            if status == 503 {
                tokio::time::sleep(self.poll).await;
                continue;
            }
            let view: Value = response.json().await?;
            if status != 200 {
                return Err(format!("workflow {workflow_id} answered {status}: {view}").into());
            }
            if view["status"] != "running" {
                break view;
            }
            tokio::time::sleep(self.poll).await;
        };
        let task = &view["tasks"][0];
        let agent = task
            .pointer("/attempts/0/agent")
            .and_then(Value::as_str)
            .or_else(|| task["agent"].as_str())
            .ok_or_else(|| format!("workflow {workflow_id} reached no agent: {view}"))?
            .to_string();
        Ok(Routed { workflow_id, agent })
    }

    /// Runs `tasks` tasks, `in_flight` at a time, and returns the agents they were routed to,
    /// in the order the tasks were submitted.
    async fn run_phase(
        &self,
        label: &str,
        capability: &str,
        routing: Option<&str>,
        (first, tasks): (usize, usize),
        in_flight: usize,
        watched: &str,
    ) -> Result<Vec<Routed>, BoxError> {
        let started = Instant::now();
        let mut results: Vec<Option<Routed>> = (0..tasks).map(|_| None).collect();
        let mut finished: Vec<bool> = Vec::with_capacity(tasks);
        let mut running = futures::stream::iter(0..tasks)
            .map(|i| async move { (i, self.run_task(capability, routing, first + i).await) })
            .buffer_unordered(in_flight.max(1));
        while let Some((i, routed)) = running.next().await {
            let routed = routed?;
            finished.push(routed.agent == watched);
            results[i] = Some(routed);
            if finished.len() % PROGRESS_EVERY == 0 || finished.len() == tasks {
                let last = &finished[finished.len().saturating_sub(PROGRESS_EVERY)..];
                println!(
                    "  [{label}] {:>3}/{tasks} tasks, {:.1} s; `{watched}` took {:>3.0} % of the last {} to finish",
                    finished.len(),
                    started.elapsed().as_secs_f64(),
                    share_of(last) * 100.0,
                    last.len(),
                );
            }
        }
        Ok(results.into_iter().flatten().collect())
    }
}

fn share_of(hits: &[bool]) -> f64 {
    if hits.is_empty() {
        return 0.0;
    }
    hits.iter().filter(|h| **h).count() as f64 / hits.len() as f64
}

fn share(choices: &[String], agent: &str) -> f64 {
    share_of(&choices.iter().map(|c| c == agent).collect::<Vec<_>>())
}

/// Expected regret: what the chosen agents' success rates fall short of the best's.
fn regret(choices: &[String], p: &HashMap<String, f64>) -> f64 {
    let best = p.values().copied().fold(0.0, f64::max);
    choices
        .iter()
        .map(|c| best - p.get(c).copied().unwrap_or(0.0))
        .sum()
}

/// The end of the first window of `WINDOW` tasks in which `agent` takes at least
/// `CONVERGED_IN_WINDOW`.
fn tasks_to_converge(choices: &[String], agent: &str) -> Option<usize> {
    (WINDOW..=choices.len()).find(|&end| {
        choices[end - WINDOW..end]
            .iter()
            .filter(|c| *c == agent)
            .count()
            >= CONVERGED_IN_WINDOW
    })
}

/// How many tasks each agent took, e.g. `q-best 180, q-mid 15, q-low 5`.
fn counts(choices: &[String], agents: &[&BenchAgent]) -> String {
    agents
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a.name,
                choices.iter().filter(|c| *c == a.name).count()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn probabilities(agents: &[&BenchAgent]) -> HashMap<String, f64> {
    agents.iter().map(|a| (a.name.to_string(), a.p())).collect()
}

fn agents_of(routed: &[Routed]) -> Vec<String> {
    routed.iter().map(|r| r.agent.clone()).collect()
}

/// Workflows whose call reached a different agent than the one the workflow's view names (or
/// several agents): a consistency check between the API and what the servers saw.
fn disagreements(routed: &[Routed], agents: &[&BenchAgent]) -> usize {
    let mut seen: HashMap<String, Vec<&str>> = HashMap::new();
    for agent in agents {
        for call in agent.server.calls() {
            if let Some(id) = call.body["workflow_id"].as_str() {
                seen.entry(id.to_string()).or_default().push(agent.name);
            }
        }
    }
    routed
        .iter()
        .filter(|r| seen.get(&r.workflow_id).map(Vec::as_slice) != Some(&[r.agent.as_str()]))
        .count()
}

/// What the learner has recorded so far for `task_type`: outcomes per agent, their success
/// rate and mean latency.
async fn learned_outcomes(
    store: &impl LearningStore,
    task_type: &str,
    agents: &[&BenchAgent],
) -> Result<String, BoxError> {
    let names = agents
        .iter()
        .map(|a| baton_types::ids::AgentName::parse(a.name))
        .collect::<Result<Vec<_>, _>>()?;
    let stats = store
        .agent_stats(&"default".parse().unwrap(), task_type, &names)
        .await?;
    Ok(names
        .iter()
        .map(|n| match stats.get(n.as_str()) {
            Some(s) => format!(
                "{n} {} ({:.0} % ok, {:.0} ms)",
                s.count,
                s.success_rate().unwrap_or(0.0) * 100.0,
                s.mean_latency_ms().unwrap_or(0.0)
            ),
            None => format!("{n} 0"),
        })
        .collect::<Vec<_>>()
        .join(", "))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let started = Instant::now();
    let root = project_root();
    let emulator = Emulator::start(&root)?;
    let stack =
        LocalStack::start_on_emulator(emulator.endpoint(), StackOptions::new("baton-rbench"))
            .await?;
    let store = baton_aws::telemetry::AwsClients::new(&sdk_config(emulator.endpoint()), None)
        .store(&stack.settings);
    let seed = args.seed;
    let ms = Duration::from_millis;
    let best = BenchAgent::start("q-best", 0.95, ms(20), seed).await?;
    let mid = BenchAgent::start("q-mid", 0.80, ms(20), seed).await?;
    let low = BenchAgent::start("q-low", 0.60, ms(20), seed).await?;
    let fast = BenchAgent::start("fast", 0.95, ms(30), seed).await?;
    let medium = BenchAgent::start("medium", 0.95, ms(150), seed).await?;
    let slow = BenchAgent::start("slow", 0.95, ms(600), seed).await?;
    let client = Client {
        http: baton_cli::tenant_client(baton_cli::LOCAL_TENANT).build()?,
        api: stack.api_url.clone(),
        poll: ms(args.poll_ms),
    };
    for agent in [&best, &mid, &low] {
        client.register(agent, &[QUALITY, QUALITY_RR]).await?;
    }
    for agent in [&fast, &medium, &slow] {
        client.register(agent, &[SPEED]).await?;
    }
    let quality = [&best, &mid, &low];
    let speed = [&fast, &medium, &slow];
    let in_flight = args.in_flight.max(1);

    println!(
        "Learned routing, end to end on the local stack (moto), {in_flight} workflow(s) in flight, \
         agents' seed {seed}."
    );
    println!(
        "Each task is a one-task workflow with one attempt: one routing decision. The agents' \
         circuit breakers are set never to open (failure_threshold 100, failure_rate 1.0, \
         window 100), so the figures measure learning, not the breaker.\n"
    );
    let phases_started = Instant::now();
    let mut total_tasks = 0;

    // Round robin first, so that degradation follows convergence at once, as in the
    // simulation. Its own capability keeps its outcomes apart from the learned phases'.
    println!(
        "Round robin baseline ({QUALITY_RR}): q-best p=0.95, q-mid p=0.80, q-low p=0.60, 20 ms"
    );
    let rr_p = probabilities(&quality);
    let rr = client
        .run_phase(
            "round robin",
            QUALITY_RR,
            Some("round_robin"),
            (0, ROUND_ROBIN_TASKS),
            in_flight,
            best.name,
        )
        .await?;
    total_tasks += rr.len();
    let rr_choices = agents_of(&rr);
    let rr_regret = regret(&rr_choices, &rr_p);
    println!(
        "  round robin: {}; regret {rr_regret:.1}\n",
        counts(&rr_choices, &quality)
    );

    println!("Convergence ({QUALITY}, learned): q-best p=0.95, q-mid p=0.80, q-low p=0.60, 20 ms");
    let convergence_p = probabilities(&quality);
    let convergence = client
        .run_phase(
            "convergence",
            QUALITY,
            None,
            (0, args.tasks + AFTER_CONVERGENCE),
            in_flight,
            best.name,
        )
        .await?;
    total_tasks += convergence.len();
    let choices = agents_of(&convergence);
    let (first, next) = choices.split_at(args.tasks.min(choices.len()));
    let learned_regret = regret(first, &convergence_p);
    let late_window = &first[first.len().saturating_sub(50)..];
    let share_next = share(next, best.name);
    let share_late = share(late_window, best.name);
    println!(
        "  tasks 1-{}: {}; regret {learned_regret:.1}",
        first.len(),
        counts(first, &quality)
    );
    println!(
        "  tasks {}-{}: {}; q-best's share {:.1} %",
        first.len() + 1,
        choices.len(),
        counts(next, &quality),
        share_next * 100.0
    );
    println!(
        "  learned outcomes so far: {}\n",
        learned_outcomes(&store, QUALITY, &quality).await?
    );

    best.set_p(0.30);
    println!("Degradation ({QUALITY}, learned): q-best drops to p=0.30");
    let degradation = client
        .run_phase(
            "degradation",
            QUALITY,
            None,
            (choices.len(), DEGRADATION_TASKS),
            in_flight,
            mid.name,
        )
        .await?;
    total_tasks += degradation.len();
    let drop = agents_of(&degradation);
    let moved = tasks_to_converge(&drop, mid.name);
    let settled = &drop[drop.len().min(50)..];
    let share_settled = share(settled, mid.name);
    println!(
        "  {}; q-mid took {CONVERGED_IN_WINDOW} of {WINDOW} tasks by task {}; q-mid's share of tasks 51-{} {:.1} %",
        counts(&drop, &quality),
        moved.map_or(format!("(not within {})", drop.len()), |m| m.to_string()),
        drop.len(),
        share_settled * 100.0
    );
    println!(
        "  learned outcomes so far: {}\n",
        learned_outcomes(&store, QUALITY, &quality).await?
    );

    println!("Latency ({SPEED}, learned): fast 30 ms, medium 150 ms, slow 600 ms, all p=0.95");
    let latency = client
        .run_phase(
            "latency",
            SPEED,
            None,
            (0, LATENCY_TASKS),
            in_flight,
            fast.name,
        )
        .await?;
    total_tasks += latency.len();
    let speed_choices = agents_of(&latency);
    let after_warm_up = &speed_choices[speed_choices.len().min(LATENCY_WARM_UP)..];
    let share_fast = share(after_warm_up, fast.name);
    println!(
        "  tasks 1-{}: {}; fast's share of tasks {}-{} {:.1} %",
        speed_choices.len(),
        counts(&speed_choices, &speed),
        LATENCY_WARM_UP + 1,
        speed_choices.len(),
        share_fast * 100.0
    );
    println!(
        "  learned outcomes so far: {}\n",
        learned_outcomes(&store, SPEED, &speed).await?
    );
    let phases_took = phases_started.elapsed();

    let all_agents = [&best, &mid, &low, &fast, &medium, &slow];
    let mismatched: usize = [&rr, &convergence, &degradation, &latency]
        .iter()
        .map(|routed| disagreements(routed, &all_agents))
        .sum();

    println!("== Summary ==");
    println!("command:   {command_line}");
    println!(
        "setup:     {in_flight} in flight, agents' seed {seed}, poll every {} ms; breakers set never to open",
        args.poll_ms
    );
    println!("(sim: the pure simulation's mean over 20 seeds, crates/baton-types/tests/learned_routing.rs)");
    println!(
        "convergence: q-best's share of tasks {}-{}: {:.1} % (sim ≈97 %); of tasks {}-{}: {:.1} %",
        args.tasks + 1,
        args.tasks + next.len(),
        share_next * 100.0,
        first.len() - late_window.len() + 1,
        first.len(),
        share_late * 100.0,
    );
    println!(
        "regret:      learned {learned_regret:.1} over tasks 1-{}, round robin {rr_regret:.1} over {}: {:.1} % of round robin's (sim ≈14 %)",
        first.len(),
        rr_choices.len(),
        if rr_regret > 0.0 {
            learned_regret / rr_regret * 100.0
        } else {
            f64::NAN
        },
    );
    println!(
        "degradation: tasks to re-converge on q-mid: {} (sim ≈32); q-mid's share of tasks 51-{}: {:.1} % (sim ≈96 %)",
        moved.map_or(format!("not within {}", drop.len()), |m| m.to_string()),
        drop.len(),
        share_settled * 100.0,
    );
    println!(
        "latency:     fast's share of tasks {}-{}: {:.1} % (sim ≈98 %)",
        LATENCY_WARM_UP + 1,
        speed_choices.len(),
        share_fast * 100.0
    );
    if mismatched > 0 {
        println!(
            "check:       {mismatched} workflow(s) whose view names another agent than the one that received the call"
        );
    } else {
        println!(
            "check:       every workflow's routed agent is the one whose server received the call"
        );
    }
    println!(
        "wall time:   {:.1} s in all ({:.1} s for the {total_tasks} tasks: {:.2} tasks/s)",
        started.elapsed().as_secs_f64(),
        phases_took.as_secs_f64(),
        total_tasks as f64 / phases_took.as_secs_f64(),
    );
    stack.shutdown().await;
    Ok(())
}
