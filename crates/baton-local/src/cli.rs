//! The `baton-local` command: `run` starts the stack with the example agents; the client
//! commands (`submit`, `workflows`, `status`, `history`, `graph`, `cancel`, `pause`, `resume`,
//! `retry`, `agents`, `stats`) talk to a running stack's API, local or deployed; `chat` holds a
//! conversation; `completions` prints a shell's completion script.
//!
//! The submodules: [`api`] is the one HTTP helper of the client commands, [`client`] the
//! commands themselves, [`render`] how answers are printed and [`progress`] how `submit` shows
//! a workflow running.

pub mod api;
pub mod client;
pub mod progress;
pub mod render;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use baton_types::agent::AgentRegistration;
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::agents::{examples, AgentServer};
use crate::api_gateway::{Authorizer, JwtAuthorizer};
use crate::conversation_agents::conversation_set;
use crate::emulator::{sdk_config_from_env, Emulator};
use crate::project_root;
use crate::stack::{LocalStack, StackOptions};

pub const DEFAULT_PORT: u16 = 3000;

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
    /// Submit a workflow file to a running stack and follow it until it ends.
    ///
    /// Progress goes to stderr (a bar on a terminal, one line per change elsewhere) and the
    /// result to stdout. Exits 1 unless the workflow succeeded.
    Submit(SubmitOptions),
    /// List workflows, newest first.
    Workflows(WorkflowsOptions),
    /// Show a workflow: its status and each task's status, agent and attempt.
    Status(WorkflowOptions),
    /// Show what happened to a workflow, one line per event.
    History(WorkflowOptions),
    /// Print a workflow's task graph (Mermaid or Graphviz dot).
    Graph(GraphOptions),
    /// Cancel a workflow.
    ///
    /// Tasks not started are cancelled, and the workflow ends once the running ones end; with
    /// `--force` at once, the running tasks cancelled too.
    Cancel(CancelOptions),
    /// Pause a workflow: running tasks finish, no new task starts until `resume`.
    Pause(WorkflowOptions),
    /// Resume a paused workflow.
    Resume(WorkflowOptions),
    /// Retry a workflow that failed or was cancelled.
    ///
    /// Its tasks that did not succeed run again.
    Retry(WorkflowOptions),
    /// List the registered agents with their health and circuit.
    Agents(ClientOptions),
    /// Show the API's statistics.
    Stats(ClientOptions),
    /// Talk to a running stack's conversational agents, one turn per line.
    Chat(crate::chat::ChatOptions),
    /// Print a shell's completion script.
    ///
    /// For example `baton-local completions bash >
    /// ~/.local/share/bash-completion/completions/baton-local`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Carries out a command, printing to stdout (and `submit`'s progress to stderr).
pub async fn execute(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    let out = &mut std::io::stdout();
    let result = match command {
        Command::Run(options) => run(options).await,
        Command::Submit(options) => {
            client::submit(options, out, progress::ProgressView::on_stderr())
                .await
                .map(drop)
        }
        Command::Workflows(options) => client::workflows(options, out).await,
        Command::Status(options) => client::status(options, out).await,
        Command::History(options) => client::history(options, out).await,
        Command::Graph(options) => client::graph(options, out).await,
        Command::Cancel(options) => {
            let force: &[_] = if options.force {
                &[("force", "true")]
            } else {
                &[]
            };
            client::control(options.workflow, "cancel", force, out).await
        }
        Command::Pause(options) => client::control(options, "pause", &[], out).await,
        Command::Resume(options) => client::control(options, "resume", &[], out).await,
        Command::Retry(options) => client::control(options, "retry", &[], out).await,
        Command::Agents(options) => client::agents(options, out).await,
        Command::Stats(options) => client::stats(options, out).await,
        Command::Chat(options) => crate::chat::chat(options).await,
        Command::Completions { shell } => Ok(completions(shell, out)?),
    };
    // A reader that stopped early (`| head`) took all it wanted: not an error.
    match result {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        result => result,
    }
}

/// Writes `shell`'s completion script for `baton-local`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    clap_complete::generate(shell, &mut Cli::command(), "baton-local", out);
    out.flush()
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

#[derive(Debug, Clone, Args)]
pub struct SubmitOptions {
    /// The workflow, as JSON.
    pub file: PathBuf,
    /// Stop following after this many seconds (the workflow goes on).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// A client command's API and how it prints the answer.
#[derive(Debug, Clone, Args)]
pub struct ClientOptions {
    #[command(flatten)]
    pub target: ApiTarget,
    /// Print the API's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

/// A command about one workflow.
#[derive(Debug, Clone, Args)]
pub struct WorkflowOptions {
    /// The workflow's id.
    pub id: String,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Debug, Clone, Args)]
pub struct CancelOptions {
    #[command(flatten)]
    pub workflow: WorkflowOptions,
    /// Cancel the running tasks too, without waiting for them to end.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct GraphOptions {
    #[command(flatten)]
    pub workflow: WorkflowOptions,
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    pub format: GraphFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(Debug, Clone, Args)]
pub struct WorkflowsOptions {
    /// Only workflows in this status (running, paused, cancelling, succeeded, failed,
    /// cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Only workflows of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only workflows created at or after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub since: Option<String>,
    /// Workflows per page.
    #[arg(long)]
    pub limit: Option<u32>,
    /// The page that starts here (a previous answer's `next_cursor`).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow the pages to the last one.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub client: ClientOptions,
}

/// Which API a client command talks to, and as whom.
#[derive(Debug, Clone, Args)]
pub struct ApiTarget {
    /// The API's base URL (a deployed stack's `ApiUrl` output, say).
    #[arg(long, default_value_t = format!("http://127.0.0.1:{DEFAULT_PORT}"))]
    pub api: String,
    /// A bearer token, for an API that authenticates (AuthMode=jwt, or `run --auth jwt`).
    #[arg(long, env = "BATON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The tenant, sent as `X-Tenant-Id`: required by an API in header mode (the local
    /// stack's examples belong to `default`), ignored where tenants come from tokens.
    #[arg(long, default_value = crate::LOCAL_TENANT)]
    pub tenant: Option<String>,
}

impl ApiTarget {
    /// An HTTP client that sends the token and the tenant with every request.
    pub fn client(&self) -> Result<reqwest::Client, Box<dyn std::error::Error>> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let tenant = self.tenant.as_deref().unwrap_or(crate::LOCAL_TENANT);
        headers.insert(
            "x-tenant-id",
            reqwest::header::HeaderValue::from_str(tenant)?,
        );
        Ok(reqwest::Client::builder()
            .default_headers(headers)
            .build()?)
    }
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
        "  cargo run -q -p baton-local -- submit examples/diamond.json --api {}\n",
        stack.api_url
    );
    // The local API names the tenant by this header (a request without it is refused).
    let tenant = format!("-H 'X-Tenant-Id: {}'", crate::LOCAL_TENANT);
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
