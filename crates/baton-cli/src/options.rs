//! The client commands' options: which API they talk to and as whom, and each command's own.

use std::path::PathBuf;

use clap::Args;

/// The port the local stack's API listens on unless told otherwise, and so the API the client
/// commands talk to by default.
pub const DEFAULT_PORT: u16 = 3000;

/// The tenant the local tools act as unless told otherwise (`X-Tenant-Id`).
pub const LOCAL_TENANT: &str = "default";

#[derive(Debug, Clone, Args)]
pub struct SubmitOptions {
    /// The workflow, as JSON.
    pub file: PathBuf,
    /// Stop following after this many seconds (the workflow goes on).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// Show each of the workflow's events as it happens (tasks ready, started, retried,
    /// ended), pushed by the streaming endpoint, instead of a progress line.
    #[arg(long)]
    pub follow: bool,
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
    #[arg(long, default_value = LOCAL_TENANT)]
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
        let tenant = self.tenant.as_deref().unwrap_or(LOCAL_TENANT);
        headers.insert(
            "x-tenant-id",
            reqwest::header::HeaderValue::from_str(tenant)?,
        );
        Ok(reqwest::Client::builder()
            .default_headers(headers)
            .build()?)
    }
}
