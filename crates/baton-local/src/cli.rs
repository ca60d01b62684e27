//! The `baton-local` command: `run` (the default) starts the stack with the example agents;
//! beside it stand the client commands of [`baton_cli`] (`submit`, `status`, `chat`,
//! `completions`, …), flattened in, so one command both runs a stack and talks to it.

use std::collections::HashMap;
use std::time::Duration;

use baton_cli::{ClientCommand, DEFAULT_PORT, LOCAL_TENANT};
use baton_types::agent::AgentRegistration;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::agents::{examples, AgentServer};
use crate::api_gateway::{Authorizer, JwtAuthorizer};
use crate::conversation_agents::conversation_set;
use crate::emulator::{sdk_config_from_env, Emulator};
use crate::project_root;
use crate::stack::{LocalStack, StackOptions};

/// Baton's local stack: the whole chain in one process against an emulator, no Docker.
///
/// Without a command it runs the stack, and takes `run`'s options.
#[derive(Debug, Parser)]
// `run`'s options stand at the top level too, so `baton-local --port 8080` runs the stack;
// they cannot be mixed with another command.
#[command(name = "baton-local", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(flatten, next_help_heading = "Options of `run`, the default command")]
    pub run: RunOptions,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command to carry out: `run` with the top-level options when none is named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Run(self.run))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the stack (the default): emulator, tables and queues, handlers, example agents.
    Run(RunOptions),
    #[command(flatten)]
    Client(ClientCommand),
}

/// Carries out a command: runs the stack, or a client command as `baton` would.
pub async fn execute(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Run(options) => run(options).await,
        Command::Client(command) => baton_cli::execute(command, Cli::command).await,
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunOptions {
    /// Port of the API.
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Prefix of the table and queue names. Restarting with the same prefix against the same
    /// emulator (AWS_ENDPOINT_URL) picks up where the last run stopped.
    #[arg(long, default_value = "baton-local")]
    pub prefix: String,
    /// Do not start and register the example agents.
    #[arg(long)]
    pub no_examples: bool,
    /// Period of the cleanup sweep in seconds, instead of the template's schedule.
    #[arg(long)]
    pub sweep_every: Option<f64>,
    /// Override a function setting of the template, e.g. `--set DISPATCH_TIMEOUT_SECONDS=30`.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
    /// Batches of the route and learn queues handled at once (more for heavy load).
    #[arg(long, default_value_t = 1)]
    pub pollers: usize,
    /// Where the API takes the tenant from: `header` trusts X-Tenant-Id (AuthMode=header);
    /// `jwt` requires a bearer token, verified as API Gateway's JWT authorizer would
    /// (AuthMode=jwt), with a local HS256 secret.
    #[arg(long, value_enum, default_value_t = AuthMode::Header)]
    pub auth: AuthMode,
    /// The HS256 secret of `--auth jwt` (default: a new random one each run).
    #[arg(long, env = "BATON_LOCAL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

/// The template's `AuthMode`, for the local stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    Header,
    Jwt,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            port: DEFAULT_PORT,
            prefix: "baton-local".into(),
            no_examples: false,
            sweep_every: None,
            settings: Vec::new(),
            pollers: 1,
            auth: AuthMode::Header,
            jwt_secret: None,
        }
    }
}

fn parse_setting(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{raw}` is not NAME=VALUE"))
}

/// Runs the stack until Ctrl-C (or SIGTERM).
pub async fn run(options: RunOptions) -> Result<(), Box<dyn std::error::Error>> {
    let root = project_root();
    // An endpoint already in the environment (LocalStack, say, or an emulator a benchmark
    // owns) is used as it is; otherwise moto is started and the handlers are pointed at it
    // the standard way.
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
    let mut stack_options = StackOptions::new(options.prefix.clone());
    stack_options.port = options.port;
    stack_options.sweep_every = options.sweep_every.map(Duration::from_secs_f64);
    stack_options.pollers = options.pollers;
    stack_options.env_overrides = options.settings.iter().cloned().collect::<HashMap<_, _>>();
    let jwt = (options.auth == AuthMode::Jwt).then(|| {
        let secret = options.jwt_secret.clone().unwrap_or_else(|| {
            let random = || uuid::Uuid::new_v4().simple().to_string();
            random() + &random()
        });
        std::sync::Arc::new(JwtAuthorizer::local(secret.as_bytes()))
    });
    if let Some(jwt) = &jwt {
        stack_options.authorizer = Authorizer::Jwt(jwt.clone());
    }
    let aws = sdk_config_from_env().await;
    let stack = LocalStack::start(&aws, &root.join("template.yaml"), stack_options).await?;

    let mut agents = Vec::new();
    if !options.no_examples {
        for (name, capability, behaviour) in examples::all() {
            let server = AgentServer::start(behaviour).await?;
            // Written whether or not a previous run registered it: its port is new.
            let registration = AgentRegistration {
                health_check: Some(baton_types::health::HealthCheckInput {
                    path: "/health".into(),
                    interval_s: Some(60),
                }),
                ..AgentRegistration::http(name, &server.url, &[capability])
            };
            stack
                .put_agent("default", registration)
                .await
                .map_err(|e| format!("registering {name}: {e}"))?;
            agents.push((name.to_string(), capability.to_string(), server));
        }
        for example in conversation_set() {
            let server = AgentServer::start(example.behaviour).await?;
            let mut registration = example.registration;
            registration["endpoint"] = server.url.clone().into();
            let capability = registration["capabilities"][0]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let registration: AgentRegistration = serde_json::from_value(registration)
                .map_err(|e| format!("the example {}: {e}", example.name))?;
            stack
                .put_agent("default", registration)
                .await
                .map_err(|e| format!("registering {}: {e}", example.name))?;
            agents.push((example.name.to_string(), capability, server));
        }
    }
    // One agent of each other kind, served by the stack's stand-ins.
    let mut kinds = Vec::new();
    if let Some(stand_ins) = stack.stand_ins().filter(|_| !options.no_examples) {
        for example in stand_ins.example_agents() {
            let name = example["name"].as_str().unwrap_or_default().to_string();
            let line = format!(
                "{:<8} {:<17} [{}]",
                example["kind"].as_str().unwrap_or_default(),
                name,
                example["capabilities"][0].as_str().unwrap_or_default()
            );
            let registration: AgentRegistration =
                serde_json::from_value(example).map_err(|e| format!("the example {name}: {e}"))?;
            stack
                .put_agent("default", registration)
                .await
                .map_err(|e| format!("registering {name}: {e}"))?;
            kinds.push(line);
        }
    }

    println!("\nBaton is running locally.\n");
    println!("  API        {}", stack.api_url);
    println!(
        "  streams    {} (links from POST /v1/stream-tokens)",
        stack.stream_url
    );
    println!("  emulator   {endpoint} (DynamoDB, SQS, SSM, Secrets Manager)");
    for (name, capability, server) in &agents {
        println!("  agent      {name:<13} {:<28} [{capability}]", server.url);
    }
    for line in &kinds {
        println!("  agent      {line}");
    }
    if let Some(jwt) = &jwt {
        println!(
            "\nEvery request but GET /health needs `Authorization: Bearer <token>` (--auth jwt);\n\
             tokens are HS256 with iss {}, aud {} and the tenant in `tenant_id`.\n\
             A token for tenant `default`, valid 12 h (`submit` and `chat` read it from\n\
             BATON_TOKEN or --token):\n\n  {}",
            jwt.issuer(),
            jwt.audience().join(","),
            jwt.token(&serde_json::json!({ "sub": "baton-local", "tenant_id": "default" }))
        );
    }
    println!("\nSubmit the example workflow and watch it run:\n");
    println!(
        "  cargo run -q -p baton-local -- submit examples/diamond.json --follow --api {}\n",
        stack.api_url
    );
    // The local API names the tenant by this header (a request without it is refused).
    let tenant = format!("-H 'X-Tenant-Id: {}'", LOCAL_TENANT);
    println!("or with curl:\n");
    println!(
        "  curl -s -X POST {}/v1/workflows {tenant} -H 'content-type: application/json' -d @examples/diamond.json",
        stack.api_url
    );
    println!(
        "  curl -s {}/v1/workflows/<workflow_id> {tenant}\n",
        stack.api_url
    );
    println!("Talk to the example conversational agents:\n");
    println!(
        "  cargo run -q -p baton-local -- chat --api {}",
        stack.api_url
    );
    println!(
        "  curl -s -X POST {}/v1/sessions {tenant} -H 'content-type: application/json' -d '{{}}'\n",
        stack.api_url
    );
    println!("Ctrl-C stops everything.");

    wait_for_stop_signal().await?;
    println!("\nstopping…");
    stack.shutdown().await;
    drop(agents);
    drop(emulator);
    Ok(())
}

async fn wait_for_stop_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
