//! The orchestration overhead of a conversation turn, and its AWS calls, on the local stack
//! with the example conversational agents (privacy and followup, then nutrition, then the
//! primary: three dependency levels; history async). A benchmark: it reports numbers and
//! asserts nothing about time.
//!
//! Overhead = the turn's response time as the client saw it, less the time spent inside the
//! agents on the turn's longest dependency path (each agent's call as Baton timed it).
//!
//! Usage: baton-conversation-bench [--turns N] [--sessions N]

use std::time::{Duration, Instant};

use baton_bench::bill::{print_bill, Durations, Usage};
use baton_bench::percentile;
use baton_chain::store::LearningStore;
use baton_local::agents::AgentServer;
use baton_local::conversation_agents::conversation_set;
use baton_local::emulator::{sdk_config, Emulator};
use baton_local::project_root;
use baton_local::stack::{LocalStack, StackOptions};
use baton_types::ids::AgentName;
use clap::Parser;
use serde_json::{json, Value};

/// Messages that neither detect a specialist nor ask for a human: every turn runs the chain.
const MESSAGES: [&str; 5] = [
    "I had toast and coffee for breakfast",
    "How much water should I drink in a day?",
    "I want to eat more protein at lunch",
    "Sugar cravings get me in the afternoon",
    "My goal is to cook dinner at home more often",
];

#[derive(Debug, Parser)]
#[command(
    name = "baton-conversation-bench",
    about = "Orchestration overhead and AWS calls per conversation turn"
)]
struct Args {
    /// Turns to run in all.
    #[arg(long, default_value_t = 200)]
    turns: usize,
    /// Sessions the turns are spread over, one after another (a session keeps 10 turns of
    /// context).
    #[arg(long, default_value_t = 10)]
    sessions: usize,
}

/// The agent time along the turn's longest dependency path, from its plan and timings.
fn agent_time_on_path(turn: &Value) -> f64 {
    let timing = &turn["timing_metrics"]["agents"];
    let own = |agent: &str| timing[agent].as_f64().unwrap_or(0.0);
    let plan = &turn["agents"];
    let steps = plan["sync"].as_array().cloned().unwrap_or_default();
    let mut path: std::collections::HashMap<String, f64> = Default::default();
    for _ in 0..steps.len() {
        for step in &steps {
            let name = step["agent"].as_str().unwrap_or_default();
            let before = step["depends_on"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| path.get(d.as_str().unwrap_or_default()))
                .fold(0.0_f64, |a, b| a.max(*b));
            path.insert(name.to_string(), before + own(name));
        }
    }
    let answering = plan["specialist"]
        .as_str()
        .or(plan["core"].as_str())
        .unwrap_or_default();
    path.values().fold(0.0_f64, |a, b| a.max(*b)) + own(answering)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let sessions = args.sessions.max(1);
    let per_session = args.turns.div_ceil(sessions);
    let root = project_root();
    let meter_path = std::env::temp_dir().join(format!(
        "baton-turn-bench-meter-{}.json",
        std::process::id()
    ));
    let emulator = Emulator::start_metered(&root, &meter_path)?;
    let mut options = StackOptions::new("baton-conversation-bench");
    options.sweep_every = Some(Duration::ZERO);
    // Batches gathered as the template's mappings gather them (learn: 5 s).
    options.batching_windows = true;
    let stack = LocalStack::start_on_emulator(emulator.endpoint(), options).await?;
    let http = baton_cli::tenant_client(baton_cli::LOCAL_TENANT).build()?;
    let mut servers: Vec<AgentServer> = Vec::new();
    let mut names = Vec::new();
    for example in conversation_set() {
        let server = AgentServer::start(example.behaviour.clone()).await?;
        let mut registration = example.registration.clone();
        registration["endpoint"] = json!(server.url);
        let answer = http
            .post(format!("{}/v1/agents", stack.api_url))
            .json(&registration)
            .send()
            .await?;
        if !answer.status().is_success() {
            return Err(format!("registering {}: {}", example.name, answer.text().await?).into());
        }
        // A turn's task is learned under its agent's first capability.
        let learned_as = registration["capabilities"][0]
            .as_str()
            .unwrap_or_default()
            .to_string();
        names.push((AgentName::parse(example.name)?, learned_as));
        servers.push(server);
    }
    let before = Usage::now(&stack, &meter_path).await?;

    let mut overheads = Vec::new();
    let mut internal = Vec::new();
    let mut responses = Vec::new();
    let mut turns = 0usize;
    let mut async_expected = 0u64;
    for _ in 0..sessions {
        let opened: Value = http
            .post(format!("{}/v1/sessions", stack.api_url))
            .json(&json!({}))
            .send()
            .await?
            .json()
            .await?;
        let session = opened["session_id"]
            .as_str()
            .ok_or("no session id")?
            .to_string();
        for i in 0..per_session {
            if turns == args.turns {
                break;
            }
            let text = MESSAGES[i % MESSAGES.len()];
            let started = Instant::now();
            let answer = http
                .post(format!("{}/v1/sessions/{session}/messages", stack.api_url))
                .json(&json!({ "text": text }))
                .send()
                .await?;
            let status = answer.status();
            let body: Value = answer.json().await?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            if status != 200 || body["status"] != "answered" {
                return Err(format!("turn {turns} not answered ({status}): {body}").into());
            }
            responses.push(elapsed);
            overheads.push(elapsed - agent_time_on_path(&body));
            internal.push(
                body["timing_metrics"]["orchestration_ms"]
                    .as_f64()
                    .unwrap_or(0.0),
            );
            async_expected += body["agents"]["async"]
                .as_array()
                .map_or(0, |a| a.len() as u64);
            turns += 1;
        }
    }
    // Learning and async results are off the critical path: wait until every call is learned.
    let store = baton_aws::telemetry::AwsClients::new(&sdk_config(emulator.endpoint()), None)
        .store(&stack.settings);
    let expected_calls: u64 = servers.iter().map(|s| s.calls().len() as u64).sum();
    for _ in 0..600 {
        let mut learned = 0;
        for (name, task_type) in &names {
            let stats = store
                .agent_stats(
                    &"default".parse().unwrap(),
                    task_type,
                    std::slice::from_ref(name),
                )
                .await?;
            learned += stats.get(name.as_str()).map_or(0, |s| s.count);
        }
        if learned >= expected_calls {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let usage = Usage::now(&stack, &meter_path).await?.since(&before);
    for list in [&mut overheads, &mut internal, &mut responses] {
        list.sort_by(|a, b| a.total_cmp(b));
    }
    let n = turns as f64;
    println!(
        "{turns} turns over {sessions} session(s), example conversational agents \
         (privacy, followup -> nutrition -> primary; checklist and human sync; history async), on moto\n"
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8}",
        "milliseconds per turn", "p50", "p99", "mean"
    );
    for (what, list) in [
        ("response time (client)", &responses),
        ("overhead: response less agents' path", &overheads),
        ("overhead as Baton timed it", &internal),
    ] {
        println!(
            "{what:<44} {:>8.1} {:>8.1} {:>8.1}",
            percentile(list, 50.0),
            percentile(list, 99.0),
            list.iter().sum::<f64>() / list.len().max(1) as f64
        );
    }
    let calls = servers.iter().map(|s| s.calls().len()).sum::<usize>() as f64;
    println!(
        "\n{:.1} agent calls per turn, {async_expected} async results kept",
        calls / n
    );
    // Turns run one after another: the durations measured are unloaded.
    let bill = print_bill(&usage, n, "turn", &Durations::new());
    println!(
        "Per agent call: {:.2} write units ({:.2} items + {:.2} indexes)",
        bill.write_units() * n / calls,
        bill.item_write_units * n / calls,
        bill.index_write_units * n / calls
    );
    stack.shutdown().await;
    drop(emulator);
    let _ = std::fs::remove_file(&meter_path);
    Ok(())
}
