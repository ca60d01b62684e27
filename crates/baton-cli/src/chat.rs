//! `baton chat` (and `baton-local chat`): an interactive conversation with a running stack's
//! agents, one turn per line typed, the answer printed as it is written when its agent
//! streams. `/resume [reply]`, `/session`, `/end` and `/quit` are commands.

use std::io::{BufRead, Write};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::options::ApiTarget;

#[derive(Debug, Clone, Args)]
pub struct ChatOptions {
    #[command(flatten)]
    pub target: ApiTarget,
    /// Continue this session instead of opening a new one.
    #[arg(long)]
    pub session: Option<String>,
    /// Seconds each message waits for its whole answer; 0 (the default) follows the answer's
    /// stream as it is written.
    #[arg(long, default_value_t = 0.0)]
    pub wait: f64,
}

struct Client {
    http: reqwest::Client,
    api: String,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), Box<dyn std::error::Error>> {
        let mut request = self.http.request(method, format!("{}{path}", self.api));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }
}

fn error_message(body: &Value) -> String {
    body.pointer("/error/message")
        .and_then(Value::as_str)
        .map_or_else(|| body.to_string(), str::to_string)
}

/// Runs the conversation until `/quit`, `/end` or the end of input.
pub async fn chat(options: ChatOptions) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client {
        http: options.target.client()?,
        api: options.target.api.trim_end_matches('/').to_string(),
    };
    let session = match options.session {
        Some(id) => id,
        None => {
            let (status, body) = client
                .send(reqwest::Method::POST, "/v1/sessions", Some(json!({})))
                .await?;
            if status != 201 {
                return Err(format!("no session: {}", error_message(&body)).into());
            }
            body["session_id"]
                .as_str()
                .ok_or("no session_id")?
                .to_string()
        }
    };
    println!("session {session} (/resume [reply], /session, /end, /quit)");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        print!("you> ");
        std::io::stdout().flush()?;
        let Some(line) = lines.next().transpose()? else {
            return Ok(());
        };
        let line = line.trim();
        let path = format!("/v1/sessions/{session}");
        match line
            .split_once(' ')
            .map_or((line, ""), |(c, rest)| (c, rest.trim()))
        {
            ("", _) => continue,
            ("/quit", _) => return Ok(()),
            ("/end", _) => {
                let (_, body) = client.send(reqwest::Method::DELETE, &path, None).await?;
                println!("{}", body["status"].as_str().unwrap_or("ended"));
                return Ok(());
            }
            ("/session", _) => {
                let (_, body) = client.send(reqwest::Method::GET, &path, None).await?;
                println!("{}", serde_json::to_string_pretty(&body)?);
            }
            ("/resume", reply) => {
                let body = if reply.is_empty() {
                    json!({})
                } else {
                    json!({ "reply": reply })
                };
                let (status, body) = client
                    .send(reqwest::Method::POST, &format!("{path}/resume"), Some(body))
                    .await?;
                match status {
                    200 => println!("resumed"),
                    _ => println!("! {}", error_message(&body)),
                }
            }
            _ => {
                let message = json!({ "text": line, "wait": options.wait });
                let (status, body) = client
                    .send(
                        reqwest::Method::POST,
                        &format!("{path}/messages"),
                        Some(message),
                    )
                    .await?;
                let (turn, streamed) = match status {
                    200 => (body, false),
                    202 => {
                        let streamed = print_stream(&client, &body).await?;
                        (follow(&client, &path, &body).await?, streamed)
                    }
                    _ => {
                        println!("! {}", error_message(&body));
                        continue;
                    }
                };
                show(&turn, streamed);
            }
        }
    }
}

/// Prints the answer's stream as it comes, until it ends; whether any text came.
async fn print_stream(
    client: &Client,
    accepted: &Value,
) -> Result<bool, Box<dyn std::error::Error>> {
    let Some(events) = accepted["events"].as_str() else {
        return Ok(false);
    };
    let mut after = 0;
    let mut printed = false;
    loop {
        let (status, read) = client
            .send(
                reqwest::Method::GET,
                &format!("{events}?after={after}&wait=10"),
                None,
            )
            .await?;
        if status != 200 {
            return Ok(printed);
        }
        for event in read["events"].as_array().into_iter().flatten() {
            match (event["type"].as_str(), event["text"].as_str()) {
                (Some("chunk"), Some(text)) => {
                    if !printed {
                        print!("baton> ");
                        printed = true;
                    }
                    print!("{text}");
                    std::io::stdout().flush()?;
                }
                (Some("abandoned"), _) if printed => println!(" [cut off; tried again]"),
                _ => {}
            }
        }
        after = read["next_after"].as_u64().unwrap_or(after);
        if read["done"] == true {
            if printed {
                println!();
            }
            return Ok(printed);
        }
    }
}

/// Polls a turn that was not answered within the wait, with a spinner.
async fn follow(
    client: &Client,
    session_path: &str,
    accepted: &Value,
) -> Result<Value, Box<dyn std::error::Error>> {
    let turn = accepted["turn"].as_u64().ok_or("no turn in the answer")?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg}")?);
    spinner.set_message(format!("turn {turn} is still running…"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let path = format!("{session_path}/turns/{turn}");
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, view) = client.send(reqwest::Method::GET, &path, None).await?;
        if view["status"] != "running" {
            spinner.finish_and_clear();
            return Ok(view);
        }
    }
}

/// The turn's answer and what it did; its response only if it was not streamed.
fn show(turn: &Value, streamed: bool) {
    match turn["response"].as_str() {
        Some(_) if streamed => {}
        Some(response) => println!("baton> {response}"),
        None if turn["is_paused"] == true => {
            println!("baton> (paused for a person: /resume [reply] lifts it)")
        }
        None => println!(
            "baton> (no answer: {})",
            turn["error"]["message"]
                .as_str()
                .unwrap_or("the turn failed")
        ),
    }
    let agents: Vec<&str> = turn["sync_agent_results"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let answering = turn["agents"]["specialist"]
        .as_str()
        .or(turn["agents"]["core"].as_str())
        .unwrap_or("-");
    println!(
        "       turn {} · {} via {} · helpers [{}] · {} ms",
        turn["turn"],
        turn["analysis"]["method"].as_str().unwrap_or("-"),
        answering,
        agents.join(", "),
        turn["timing_metrics"]["total_ms"]
    );
    if let Some(results) = turn["async_agent_results"]
        .as_object()
        .filter(|r| !r.is_empty())
    {
        for (agent, result) in results {
            println!("       async {agent}: {}", result["result"]);
        }
    }
    if let Some(current) = turn["checkpoints"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["status"] != "complete"))
    {
        println!(
            "       checkpoint: {} ({})",
            current["description"].as_str().unwrap_or("?"),
            current["status"].as_str().unwrap_or("?")
        );
    }
    if turn["requires_human"] == true {
        println!("       a person was asked to join; the session is paused");
    }
}
