//! The emulator process: moto server, serving DynamoDB and SQS on loopback.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;

const LOCAL_REGION: &str = "us-east-1";

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("no Python virtualenv at {0}: run infra/setup-venv.sh first")]
    NoVirtualenv(PathBuf),
    #[error("the emulator could not be started: {0}")]
    Start(String),
}

/// A running moto server. Dropping it stops the server; so does the death of this process,
/// because the server exits when its stdin closes.
#[derive(Debug)]
pub struct Emulator {
    endpoint: String,
    child: Child,
    _stdin: ChildStdin,
}

impl Emulator {
    /// Starts moto from the project's virtualenv on a free loopback port.
    pub fn start(project_root: &Path) -> Result<Self, EmulatorError> {
        Self::spawn(project_root, None)
    }

    /// Starts moto as [`Emulator::start`] does, metering the DynamoDB write units by item
    /// size: the emulator keeps the totals, as JSON, in the file at `meter` (rewritten every
    /// 200 ms; see `meter_writes` in infra/emulator.py).
    pub fn start_metered(project_root: &Path, meter: &Path) -> Result<Self, EmulatorError> {
        Self::spawn(project_root, Some(meter))
    }

    fn spawn(project_root: &Path, meter: Option<&Path>) -> Result<Self, EmulatorError> {
        let python = std::env::var_os("BATON_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| project_root.join(".venv/bin/python"));
        if !python.exists() {
            return Err(EmulatorError::NoVirtualenv(python));
        }
        let port = free_port().map_err(|e| EmulatorError::Start(e.to_string()))?;
        let mut command = Command::new(&python);
        if let Some(meter) = meter {
            command.env("BATON_EMULATOR_METER", meter);
        }
        let mut child = command
            .arg(project_root.join("infra/emulator.py"))
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| EmulatorError::Start(format!("{}: {e}", python.display())))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| EmulatorError::Start(e.to_string()))?;
        if !line.starts_with("ready") {
            let _ = child.kill();
            return Err(EmulatorError::Start(format!(
                "moto did not report ready (got {line:?}); is moto[server] installed in the venv?"
            )));
        }
        Ok(Emulator {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            _stdin: stdin,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SDK configuration for the emulator at `endpoint`, with a fixed region and throwaway
/// credentials: the same settings `AWS_ENDPOINT_URL` gives, for code that shares one process
/// with other stacks.
pub fn sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(LOCAL_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "local",
            "local",
            None,
            None,
            "baton-local",
        )))
        // The functions' own HTTP client, so the local stack runs the stack they ship.
        .http_client(baton_aws::transport::sdk_http_client())
        .build()
}

/// The SDK configuration from the standard environment, as a deployed function loads it,
/// with the local region and throwaway credentials filled in where the environment has none.
/// `AWS_ENDPOINT_URL` decides where the calls go: moto, LocalStack, or AWS itself.
pub async fn sdk_config_from_env() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(baton_aws::transport::sdk_http_client());
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        loader = loader.region(Region::new(LOCAL_REGION));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() && std::env::var_os("AWS_PROFILE").is_none()
    {
        loader = loader.credentials_provider(Credentials::new(
            "local",
            "local",
            None,
            None,
            "baton-local",
        ));
    }
    loader.load().await
}

/// A port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
