//! Start-up wiring every function shares: the log subscriber, settings that fail fast, and
//! the AWS clients, built once (counted by [`crate::counter`] when asked).

use aws_config::{BehaviorVersion, SdkConfig};

use crate::counter::ApiCallCounter;
use crate::dynamo::DynamoStore;
use crate::sqs::{SqsQueueStats, SqsQueues};
use baton_chain::config::Settings;

/// The clients every function needs. Built once per execution environment.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// The configuration they were built from, for the clients built on first use (the
    /// agents' Lambda, Bedrock, Secrets Manager and SSM).
    pub config: SdkConfig,
    /// Counts the calls of the clients built later too (the payload bucket's).
    counter: Option<ApiCallCounter>,
}

/// The configuration a Lambda function needs, from the variables Lambda sets (region and the
/// role's credentials) and `AWS_ENDPOINT_URL`; built by hand because the full loader links
/// every credential source (profiles, SSO, STS web identity, IMDS) that Lambda never uses.
fn lambda_sdk_config() -> SdkConfig {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
    let credentials = aws_config::environment::EnvironmentVariableCredentialsProvider::new();
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region.map(aws_config::Region::new))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
        )
        .time_source(aws_smithy_async::time::SystemTimeSource::new())
        .http_client(crate::transport::sdk_http_client());
    config.set_endpoint_url(env("AWS_ENDPOINT_URL"));
    config.set_sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep());
    config.build()
}

impl AwsClients {
    /// Region, credentials and endpoint come from the variables Lambda sets, so
    /// `AWS_ENDPOINT_URL` points the same binary at an emulator.
    pub async fn from_env() -> Self {
        Self::new(&lambda_sdk_config(), None)
    }

    pub fn new(config: &SdkConfig, counter: Option<&ApiCallCounter>) -> Self {
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(config);
        let mut sqs = aws_sdk_sqs::config::Builder::from(config);
        if let Some(counter) = counter {
            dynamodb = dynamodb.interceptor(counter.clone());
            sqs = sqs.interceptor(counter.clone());
        }
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
            config: config.clone(),
            counter: counter.cloned(),
        }
    }

    /// The store, with the payload bucket when the settings name one (its client is built
    /// on first use, by the first payload too large for its item).
    pub fn store(&self, settings: &Settings) -> DynamoStore {
        let store = DynamoStore::new(
            self.dynamodb.clone(),
            settings.state_table.clone(),
            settings.memory_table.clone(),
        );
        match &settings.payload_bucket {
            Some(bucket) => store.with_payloads(std::sync::Arc::new(crate::s3::S3Payloads::new(
                &self.config,
                bucket,
                self.counter.clone(),
            ))),
            None => store,
        }
    }

    pub fn queues(&self, settings: &Settings) -> SqsQueues {
        SqsQueues::new(
            self.sqs.clone(),
            settings.route_queues.clone(),
            settings.execute_queues.clone(),
            settings.learn_queue_url.clone(),
        )
    }

    /// The depths of every queue in the settings, for the API's stats.
    pub fn queue_stats(&self, settings: &Settings) -> SqsQueueStats {
        SqsQueueStats::new(self.sqs.clone(), settings)
    }
}

/// The log subscriber of a function: JSON when Lambda's log format is JSON (the template's),
/// at the level Lambda's `ApplicationLogLevel` sets (`AWS_LAMBDA_LOG_LEVEL`), else `RUST_LOG`'s
/// (a level, or per-target levels such as `baton=debug,info`), else INFO. Built here rather
/// than by the runtime's helper: that one links a regex engine for `RUST_LOG` patterns the
/// functions never use (about 0.3 MB of every binary).
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let filter = env("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|| env("RUST_LOG"))
        .and_then(|levels| levels.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let json = env("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .with_writer(std::io::stdout);
    // A subscriber already installed (a test, the local stack) stays.
    let _already_installed = if json {
        tracing_subscriber::registry()
            .with(logs.json().with_filter(filter))
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(logs.with_filter(filter))
            .try_init()
    };
}

/// The start-up every function binary shares: the log subscriber, settings that fail fast,
/// and the AWS clients, once.
pub async fn init_function() -> Result<(Settings, AwsClients), baton_chain::config::ConfigError> {
    init_logging();
    crate::transport::install_crypto_provider();
    let settings = Settings::from_env()?;
    Ok((settings, AwsClients::from_env().await))
}
