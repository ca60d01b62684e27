//! The `baton-local` command: `run` starts the stack with the example agents; `submit` sends a
//! workflow file to a running stack and shows the result.

use std::time::Duration;

use serde_json::{json, Value};

use crate::agents::{examples, AgentServer};
use crate::emulator::{sdk_config_from_env, Emulator};
use crate::project_root;
use crate::stack::{LocalStack, StackOptions};

pub const DEFAULT_PORT: u16 = 3000;

pub struct RunOptions {
    pub port: u16,
}

impl RunOptions {
    /// `--port N`, else `PORT`, else 3000.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut port = match std::env::var("PORT") {
            Ok(p) if !p.is_empty() => p
                .parse()
                .map_err(|_| format!("PORT `{p}` is not a port number"))?,
            _ => DEFAULT_PORT,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--port" => {
                    let value = args.next().ok_or("--port needs a value")?;
                    port = value
                        .parse()
                        .map_err(|_| format!("--port `{value}` is not a port number"))?;
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        Ok(RunOptions { port })
    }
}

/// Runs the stack until Ctrl-C.
pub async fn run(options: RunOptions) -> Result<(), Box<dyn std::error::Error>> {
    let root = project_root();
    // An endpoint already in the environment (LocalStack, say) is used as it is; otherwise
    // moto is started and the handlers are pointed at it the standard way.
    let emulator = match std::env::var("AWS_ENDPOINT_URL") {
        Ok(endpoint) if !endpoint.is_empty() => {
            println!("using the emulator at AWS_ENDPOINT_URL={endpoint}");
            None
        }
        _ => {
            let emulator = Emulator::start(&root)?;
            std::env::set_var("AWS_ENDPOINT_URL", emulator.endpoint());
            Some(emulator)
        }
    };
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let mut stack_options = StackOptions::new("baton-local");
    stack_options.port = options.port;
    let aws = sdk_config_from_env().await;
    let stack = LocalStack::start(&aws, &root.join("template.yaml"), stack_options).await?;

    let client = reqwest::Client::new();
    let mut agents = Vec::new();
    for (name, capability, behaviour) in examples::all() {
        let server = AgentServer::start(behaviour).await?;
        let response = client
            .post(format!("{}/v1/agents", stack.api_url))
            .json(&json!({ "name": name, "endpoint": server.url, "capabilities": [capability] }))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("registering {name}: {}", response.text().await?).into());
        }
        agents.push((name, capability, server));
    }

    println!("\nBaton is running locally.\n");
    println!("  API        {}", stack.api_url);
    println!("  emulator   {endpoint} (DynamoDB, SQS)");
    for (name, capability, server) in &agents {
        println!("  agent      {name:<11} {:<28} [{capability}]", server.url);
    }
    println!("\nSubmit the example workflow and watch it run:\n");
    println!(
        "  cargo run -q -p baton-local -- submit examples/diamond.json --api {}\n",
        stack.api_url
    );
    println!("or with curl:\n");
    println!(
        "  curl -s -X POST {}/v1/workflows -H 'content-type: application/json' -d @examples/diamond.json",
        stack.api_url
    );
    println!("  curl -s {}/v1/workflows/<workflow_id>\n", stack.api_url);
    println!("Ctrl-C stops everything.");

    tokio::signal::ctrl_c().await?;
    println!("\nstopping…");
    stack.shutdown().await;
    drop(agents);
    drop(emulator);
    Ok(())
}

/// Submits a workflow file and polls until the workflow ends; prints each change of status.
pub async fn submit(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let mut file = None;
    let mut api = format!("http://127.0.0.1:{DEFAULT_PORT}");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--api" => api = args.next().ok_or("--api needs a URL")?.clone(),
            other if file.is_none() => file = Some(other.to_string()),
            other => return Err(format!("unexpected argument `{other}`").into()),
        }
    }
    let file = file.ok_or("usage: baton-local submit FILE.json [--api URL]")?;
    let body = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{api}/v1/workflows"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let accepted: Value = response.json().await?;
    println!("{}", serde_json::to_string_pretty(&accepted)?);
    if !status.is_success() {
        return Err(format!("the workflow was refused ({status})").into());
    }
    let id = accepted["workflow_id"]
        .as_str()
        .ok_or("no workflow_id in the answer")?;
    let mut last = String::new();
    for _ in 0..600 {
        let view: Value = client
            .get(format!("{api}/v1/workflows/{id}"))
            .send()
            .await?
            .json()
            .await?;
        let line = view["tasks"]
            .as_array()
            .map(|tasks| {
                tasks
                    .iter()
                    .map(|t| {
                        format!(
                            "{}={}",
                            t["id"].as_str().unwrap_or("?"),
                            t["status"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let line = format!("{}: {line}", view["status"].as_str().unwrap_or("?"));
        if line != last {
            println!("{line}");
            last = line;
        }
        if view["status"] != "running" {
            println!("{}", serde_json::to_string_pretty(&view)?);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("the workflow did not finish within two minutes".into())
}
