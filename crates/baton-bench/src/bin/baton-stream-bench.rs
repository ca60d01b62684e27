//! What streaming adds on the local stack, read as a client reads it: through the streaming
//! endpoint, as server-sent events. A benchmark: it reports numbers and asserts nothing about
//! time.
//!
//! - **Time to first token, for a task and for a conversation turn.** An http agent answers
//!   with server-sent parts, its first one [`AGENT_FIRST_TOKEN`] after the call arrives. Baton's
//!   overhead is the client's time from sending the work to reading the first chunk, less
//!   that agent time; it splits into the way in (sending to the agent's call: the API, the
//!   queues, routing) and the way out (the agent's first part to the client: the batch, its
//!   write, the endpoint's read).
//! - **Events per second on one stream.** An agent streams as fast as it can
//!   ([`BURST_PARTS`] parts of 64 bytes); the client counts the chunk events and bytes it reads
//!   from the first chunk to the end.
//!
//! Usage: baton-stream-bench [--runs N]

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_local::agents::{AgentReply, AgentServer};
use baton_local::emulator::Emulator;
use baton_local::project_root;
use baton_local::stack::{LocalStack, StackOptions};
use baton_types::clock::now_ms;
use baton_types::patterns::percentile;
use baton_types::stream::SseDecoder;
use clap::Parser;
use serde_json::{json, Value};

/// The agent's own time to its first part.
const AGENT_FIRST_TOKEN: Duration = Duration::from_millis(100);
/// Parts of the burst that measures a stream's rate.
const BURST_PARTS: usize = 8_000;

#[derive(Debug, Parser)]
#[command(
    name = "baton-stream-bench",
    about = "Time to first token and a stream's rate, through the streaming endpoint"
)]
struct Args {
    /// Tasks, and turns, timed (one after another).
    #[arg(long, default_value_t = 40)]
    runs: usize,
}

type Outcome<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// What one client saw of one stream.
struct Seen {
    /// When the first chunk arrived (epoch ms).
    first_chunk_ms: Option<i64>,
    chunks: usize,
    bytes: usize,
    /// From the first chunk to the end.
    chunk_span: Duration,
}

/// Reads a stream to its end through the streaming endpoint.
async fn read_stream(http: &reqwest::Client, url: &str) -> Outcome<Seen> {
    let mut response = http.get(url).send().await?;
    if response.status().as_u16() != 200 {
        return Err(format!("the stream answered {}", response.status()).into());
    }
    let mut decoder = SseDecoder::default();
    let mut seen = Seen {
        first_chunk_ms: None,
        chunks: 0,
        bytes: 0,
        chunk_span: Duration::ZERO,
    };
    let mut first_at = None;
    let mut ends = 0;
    while let Some(bytes) = response.chunk().await? {
        for event in decoder.feed(&bytes)? {
            let event: Value = serde_json::from_str(&event.data)?;
            match event["type"].as_str() {
                Some("chunk") => {
                    if first_at.is_none() {
                        first_at = Some(Instant::now());
                        seen.first_chunk_ms = Some(now_ms());
                    }
                    seen.chunks += 1;
                    seen.bytes += event["text"].as_str().map_or(0, str::len);
                }
                Some("end") => {
                    ends += 1;
                    seen.chunk_span = first_at.map_or(Duration::ZERO, |at| at.elapsed());
                }
                _ => {}
            }
        }
    }
    if ends == 0 {
        return Err("the stream closed before its end".into());
    }
    Ok(seen)
}

/// A link to `path` on the streaming endpoint.
async fn link(http: &reqwest::Client, stack: &LocalStack, path: &str) -> Outcome<String> {
    let minted: Value = http
        .post(format!("{}/v1/stream-tokens", stack.api_url))
        .json(&json!({ "path": path }))
        .send()
        .await?
        .json()
        .await?;
    Ok(minted["url"]
        .as_str()
        .ok_or_else(|| format!("no link: {minted}"))?
        .to_string())
}

async fn post(
    http: &reqwest::Client,
    stack: &LocalStack,
    path: &str,
    body: Value,
) -> Outcome<Value> {
    let response = http
        .post(format!("{}{path}", stack.api_url))
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        return Err(format!("{path}: {status} {body}").into());
    }
    Ok(body)
}

/// The way in, the way out and the whole overhead of one run, in ms.
fn overheads(sent_ms: i64, agent: &AgentServer, seen: &Seen) -> Outcome<(u64, u64, u64)> {
    let called_ms = agent
        .calls()
        .last()
        .ok_or("the agent was not called")?
        .at_ms;
    let first = seen.first_chunk_ms.ok_or("no chunk came")?;
    let agent_ms = AGENT_FIRST_TOKEN.as_millis() as i64;
    let way_in = (called_ms - sent_ms).max(0) as u64;
    let way_out = (first - called_ms - agent_ms).max(0) as u64;
    Ok((way_in, way_out, (first - sent_ms - agent_ms).max(0) as u64))
}

#[derive(Default)]
struct Timings {
    way_in: Vec<u64>,
    way_out: Vec<u64>,
    total: Vec<u64>,
}

impl Timings {
    fn add(&mut self, (way_in, way_out, total): (u64, u64, u64)) {
        self.way_in.push(way_in);
        self.way_out.push(way_out);
        self.total.push(total);
    }

    fn print(&mut self, what: &str) {
        for (part, list) in [
            ("sent -> agent called", &mut self.way_in),
            ("agent's first part -> client", &mut self.way_out),
            (
                "overhead: first chunk less the agent's time",
                &mut self.total,
            ),
        ] {
            println!(
                "{:<52} {:>8} {:>8}",
                format!("{what}: {part}"),
                percentile(list, 50.0).unwrap_or(0),
                percentile(list, 99.0).unwrap_or(0),
            );
        }
    }
}

#[tokio::main]
async fn main() -> Outcome {
    let args = Args::parse();
    let root = project_root();
    let emulator = Emulator::start(&root)?;
    let mut options = StackOptions::new("baton-stream-bench");
    options.sweep_every = Some(Duration::ZERO);
    let stack = LocalStack::start_on_emulator(emulator.endpoint(), options).await?;
    let http = baton_cli::tenant_client(baton_cli::LOCAL_TENANT).build()?;
    let words: Vec<Value> = [
        "Streams ", "carry ", "an ", "answer ", "as ", "it ", "is ", "written.",
    ]
    .iter()
    .map(|w| json!({ "text": w }))
    .collect();
    let mut answer = words.clone();
    answer.push(json!({ "output": { "response": "Streams carry an answer as it is written." } }));
    let paced = AgentReply::streamed(true, &answer, AGENT_FIRST_TOKEN);
    let writer = AgentServer::start(Arc::new(move |_: &Value| paced.clone())).await?;
    let burst: Vec<Value> = (0..BURST_PARTS)
        .map(|i| json!({ "text": format!("{i:>8} {}", "x".repeat(55)) }))
        .collect();
    let fast = AgentReply::streamed(true, &burst, Duration::ZERO);
    let burster = AgentServer::start(Arc::new(move |_: &Value| fast.clone())).await?;
    for (name, server, extra) in [
        ("writer", &writer, json!({ "capabilities": ["write"] })),
        ("burster", &burster, json!({ "capabilities": ["burst"] })),
        (
            "talker",
            &writer,
            json!({ "capabilities": ["talk"], "conversation": { "role": "core" } }),
        ),
    ] {
        let mut body = json!({ "name": name, "endpoint": server.url, "timeout_ms": 60000 });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        post(&http, &stack, "/v1/agents", body).await?;
    }

    let mut tasks = Timings::default();
    for _ in 0..args.runs {
        let sent_ms = now_ms();
        let accepted = post(
            &http,
            &stack,
            "/v1/workflows",
            json!({ "name": "ttft", "tasks": [
                { "id": "t", "capability": "write", "stream": true, "input": {} } ] }),
        )
        .await?;
        let id = accepted["workflow_id"].as_str().ok_or("no workflow id")?;
        let url = link(&http, &stack, &format!("/v1/workflows/{id}/tasks/t/events")).await?;
        let seen = read_stream(&http, &url).await?;
        tasks.add(overheads(sent_ms, &writer, &seen)?);
    }

    let mut turns = Timings::default();
    let session = post(&http, &stack, "/v1/sessions", json!({})).await?;
    let session = session["session_id"]
        .as_str()
        .ok_or("no session")?
        .to_string();
    for run in 0..args.runs {
        // A new session every ten turns: each turn carries at most ten earlier ones.
        let session = if run % 10 == 0 && run > 0 {
            let opened = post(&http, &stack, "/v1/sessions", json!({})).await?;
            opened["session_id"]
                .as_str()
                .ok_or("no session")?
                .to_string()
        } else {
            session.clone()
        };
        let sent_ms = now_ms();
        let turn = post(
            &http,
            &stack,
            &format!("/v1/sessions/{session}/messages"),
            json!({ "text": "How should I stream?", "wait": 0 }),
        )
        .await?;
        let stream = turn["stream"]
            .as_str()
            .ok_or_else(|| format!("no stream: {turn}"))?;
        let url = link(&http, &stack, stream).await?;
        let seen = read_stream(&http, &url).await?;
        turns.add(overheads(sent_ms, &writer, &seen)?);
    }

    let accepted = post(
        &http,
        &stack,
        "/v1/workflows",
        json!({ "name": "burst", "tasks": [
            { "id": "t", "capability": "burst", "stream": true, "input": {} } ] }),
    )
    .await?;
    let id = accepted["workflow_id"].as_str().ok_or("no workflow id")?;
    let url = link(&http, &stack, &format!("/v1/workflows/{id}/tasks/t/events")).await?;
    let burst_seen = read_stream(&http, &url).await?;

    println!(
        "{} streamed tasks and {} streamed turns (an http agent, first part {} ms after its call), \
         read through the streaming endpoint, on moto\n",
        args.runs,
        args.runs,
        AGENT_FIRST_TOKEN.as_millis()
    );
    println!("{:<52} {:>8} {:>8}", "milliseconds", "p50", "p99");
    tasks.print("task");
    turns.print("turn");
    let seconds = burst_seen.chunk_span.as_secs_f64().max(1e-3);
    println!(
        "\nOne stream, {} parts of 64 bytes as fast as the agent sends them: {} chunk events, \
         {:.0} KB in {:.2} s: {:.1} events/s, {:.0} KB/s",
        BURST_PARTS,
        burst_seen.chunks,
        burst_seen.bytes as f64 / 1000.0,
        seconds,
        burst_seen.chunks as f64 / seconds,
        burst_seen.bytes as f64 / 1000.0 / seconds
    );
    stack.shutdown().await;
    Ok(())
}
