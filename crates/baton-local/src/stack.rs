//! The whole chain in one process: the template's tables and queues in the emulator, and the
//! five handlers driven exactly as Lambda drives them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_aws::counter::ApiCallCounter;
use baton_aws::dynamo::DynamoStore;
use baton_aws::invoker::AgentInvokers;
use baton_aws::prober::HttpHealthProber;
use baton_aws::sqs::SqsQueues;
use baton_aws::telemetry::AwsClients;
use baton_chain::config::{ConfigError, Settings, TENANT_SOURCE_VAR};
use baton_cleanup::CleanupDeps;
use baton_execute_agent::ExecuteDeps;
use baton_learn::LearnDeps;
use baton_orchestrate::Api;
use baton_route::{InlineRouting, RouteDeps};
use baton_types::endpoint::{HTTP_HOSTS_VAR, PRIVATE_NETWORKS_VAR};
use lambda_runtime::LambdaEvent;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api_gateway::Authorizer;
use crate::event_sources::{poll_queue, tick, HandlerDeaths, SqsSource};
use crate::faults::{FaultPlan, FaultProxy};
use crate::invocations::Invocations;
use crate::provision::ProvisionClients;
use crate::provision::{provision, ProvisionError, Provisioned};
use crate::stand_ins::{StandInError, StandIns};
use crate::template::{resolve_value, EventSpec, FunctionSpec, Template, TemplateError};
use aws_config::SdkConfig;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("function {function}: {source}")]
    Config {
        function: String,
        source: ConfigError,
    },
    #[error("the template has no function running binary `{0}`")]
    MissingFunction(&'static str),
    #[error("function {function} has no {event} event in the template")]
    MissingEvent {
        function: String,
        event: &'static str,
    },
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error("the HTTP client for agents could not be built: {0}")]
    Http(String),
    #[error("the stream key: {0}")]
    StreamKey(#[from] baton_aws::streaming::StreamKeyError),
    #[error("the fault-injecting proxy could not start: {0}")]
    Faults(std::io::Error),
    #[error("the SDK configuration has no endpoint to put the fault proxy in front of")]
    NoEndpoint,
    #[error(transparent)]
    StandIns(#[from] StandInError),
}

/// Which event sources run. Tests turn some off to drive those handlers by hand.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Port of the API; 0 picks a free one.
    pub port: u16,
    /// Prefix of every table and queue name, so stacks can share one emulator.
    pub prefix: String,
    pub run_route: bool,
    pub run_execute: bool,
    pub run_learn: bool,
    /// Period of the cleanup sweep: None keeps the template's schedule, Some(ZERO) turns it off.
    pub sweep_every: Option<Duration>,
    /// Environment values that override the template's (e.g. shorter timeouts in tests).
    pub env_overrides: HashMap<String, String>,
    /// Puts a fault-injecting proxy between the handlers and the emulator.
    pub faults: Option<FaultPlan>,
    /// Share of handler invocations that die at a random point, as a Lambda killed mid-run.
    pub handler_death_rate: f64,
    /// Batches of the route and learn queues handled at once (execute: four). One by default,
    /// which fills batches as Lambda does at light load (learning writes once per agent per
    /// batch); more keep up under heavy load.
    pub pollers: usize,
    /// Gathers batches for the template's `MaximumBatchingWindowInSeconds`, as the mappings do
    /// (learn's 5 s). Off by default, so tests see each message at once; the cost benchmark
    /// turns it on.
    pub batching_windows: bool,
    /// The HTTP API's authorizer. None by default: the local stack runs as `AuthMode=header`
    /// and trusts `X-Tenant-Id`; `Authorizer::Jwt` plays the JWT authorizer of `AuthMode=jwt`.
    pub authorizer: Authorizer,
    /// Runs the stand-ins for the Lambda, Bedrock and OpenAI-compatible APIs that the
    /// `lambda`, `bedrock` and `openai` agents reach.
    pub stand_ins: bool,
}

impl StackOptions {
    pub fn new(prefix: impl Into<String>) -> Self {
        StackOptions {
            port: 0,
            prefix: prefix.into(),
            run_route: true,
            run_execute: true,
            run_learn: true,
            sweep_every: None,
            env_overrides: HashMap::new(),
            faults: None,
            handler_death_rate: 0.0,
            pollers: 1,
            batching_windows: false,
            authorizer: Authorizer::None,
            stand_ins: true,
        }
    }

    /// Only the API and the provisioned resources: no pollers and no sweep, for driving the
    /// handlers and adapters by hand.
    pub fn api_only(prefix: impl Into<String>) -> Self {
        StackOptions {
            run_route: false,
            run_execute: false,
            run_learn: false,
            sweep_every: Some(Duration::ZERO),
            stand_ins: false,
            ..Self::new(prefix)
        }
    }
}

/// Values the local stack uses over the template's: agents run on this machine, so loopback
/// is allowed, over plain http too (the template's defaults allow neither), and the Bedrock
/// stand-in's models are the allowed ones.
/// Any page may read streams, since local pages come from files and ports of any kind.
const LOCAL_ENVIRONMENT: [(&str, &str); 4] = [
    (HTTP_HOSTS_VAR, "127.0.0.1,localhost,[::1]"),
    (PRIVATE_NETWORKS_VAR, "127.0.0.0/8,::1/128"),
    ("BATON_BEDROCK_MODELS", "baton.brief-v1,baton.keywords-v1"),
    ("BATON_STREAM_ORIGINS", "*"),
];

fn local_default(name: &str) -> Option<String> {
    LOCAL_ENVIRONMENT
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

pub type Store = DynamoStore;
pub type Queues = SqsQueues;
/// orchestrate's and execute-agent's queues: each routes the tasks it makes ready itself.
pub type ExecuteQueues = InlineRouting<Store, Queues>;

/// A queue-driven function's handler, as its event-source stand-in calls it.
type BatchHandler = Arc<
    dyn Fn(
            LambdaEvent<SqsEvent>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<SqsBatchResponse, lambda_runtime::Error>>
                    + Send,
            >,
        > + Send
        + Sync,
>;

/// A running local stack. Dropping it stops its servers, pollers and ticker.
pub struct LocalStack {
    pub api_url: String,
    /// The streaming endpoint (the stream function's URL).
    pub stream_url: String,
    pub settings: Settings,
    /// Clients straight to the emulator (never through the fault proxy): provisioning, the
    /// event-source stand-ins, and tests that look at the tables and queues.
    pub clients: AwsClients,
    pub provisioned: Provisioned,
    /// Counts every AWS call the stack's handlers make.
    pub api_calls: ApiCallCounter,
    /// Counts each function's invocations and their durations (the API's requests are
    /// orchestrate's), what Lambda and API Gateway would bill.
    pub invocations: Invocations,
    route: Arc<RouteDeps<Store, Queues>>,
    execute: Arc<ExecuteDeps<Store, ExecuteQueues, AgentInvokers>>,
    cleanup: Arc<CleanupDeps<Store, Queues, HttpHealthProber>>,
    stand_ins: Option<StandIns>,
    learn: Arc<LearnDeps<Store>>,
    faults: Option<FaultProxy>,
    deaths: HandlerDeaths,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl LocalStack {
    /// Provisions the template's resources and starts the handlers. `aws` is the SDK
    /// configuration the handlers use: an emulator's endpoint, region and credentials.
    pub async fn start(
        aws: &SdkConfig,
        template_path: &Path,
        options: StackOptions,
    ) -> Result<Self, StackError> {
        let template = Template::load(template_path)?;
        let api_calls = ApiCallCounter::default();
        let invocations = Invocations::default();
        let clients = AwsClients::new(aws, Some(&api_calls));
        let provisioned = provision(
            &template,
            &options.prefix,
            ProvisionClients {
                dynamodb: &clients.dynamodb,
                sqs: &clients.sqs,
                s3: &crate::provision::s3_client(aws),
                secrets: &aws_sdk_secretsmanager::Client::new(aws),
            },
        )
        .await?;
        // The handlers reach the emulator through the fault proxy when there is one.
        let faults = match &options.faults {
            Some(plan) => {
                let upstream = aws.endpoint_url().ok_or(StackError::NoEndpoint)?;
                Some(
                    FaultProxy::start(upstream, plan.clone())
                        .await
                        .map_err(StackError::Faults)?,
                )
            }
            None => None,
        };
        let handler_clients = match &faults {
            Some(proxy) => AwsClients::new(
                &aws.to_builder().endpoint_url(proxy.endpoint()).build(),
                Some(&api_calls),
            ),
            None => clients.clone(),
        };
        let deaths = HandlerDeaths::new(options.handler_death_rate);
        let stand_ins = match options.stand_ins {
            true => Some(StandIns::start(aws, &options.prefix).await?),
            false => None,
        };
        // The agents' clients as a function gets them: the SDK's configuration (through the
        // fault proxy, if any), with the stand-ins' endpoints for Lambda and Bedrock.
        let invokers = |settings: &Settings| -> Result<AgentInvokers, StackError> {
            let endpoints = stand_ins
                .as_ref()
                .map(StandIns::endpoints)
                .unwrap_or_default();
            Ok(AgentInvokers::new(settings, &handler_clients.config)
                .map_err(|e| StackError::Http(e.to_string()))?
                .with_endpoints(endpoints))
        };

        // The streaming endpoint's port first: orchestrate names it in the links it gives.
        let stream_listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|source| StackError::Listen { port: 0, source })?;
        let stream_url = format!(
            "http://{}",
            stream_listener
                .local_addr()
                .map_err(|source| StackError::Listen { port: 0, source })?
        );
        let function = |binary: &'static str| -> Result<(&String, &FunctionSpec), StackError> {
            template
                .functions
                .iter()
                .find(|(_, f)| f.binary == binary)
                .ok_or(StackError::MissingFunction(binary))
        };
        let settings_of = |(id, spec): (&String, &FunctionSpec)| -> Result<Settings, StackError> {
            Settings::from_lookup(|name| {
                // Orchestrate takes tenants from where the API Gateway stand-in puts them.
                let tenant_source = match options.authorizer {
                    Authorizer::None => "header",
                    Authorizer::Jwt(_) => "jwt",
                };
                (name == TENANT_SOURCE_VAR)
                    .then(|| tenant_source.to_string())
                    .or_else(|| (name == "BATON_STREAM_URL").then(|| stream_url.clone()))
                    .or_else(|| options.env_overrides.get(name).cloned())
                    .or_else(|| local_default(name))
                    .or_else(|| resolve_value(&template, &provisioned, spec.environment.get(name)?))
            })
            // Loopback agents: the one thing only the local stack may allow.
            .map(Settings::with_loopback)
            .map_err(|source| StackError::Config {
                function: id.clone(),
                source,
            })
        };
        // Every SQS event source of a function: route and execute have one per priority band.
        let sqs_sources =
            |(id, spec): (&String, &FunctionSpec)| -> Result<Vec<SqsSource>, StackError> {
                let sources: Vec<SqsSource> = spec
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        EventSpec::Sqs {
                            queue,
                            batch_size,
                            batching_window_s,
                        } => {
                            let (queue_url, queue_arn) = provisioned.queues.get(queue)?.clone();
                            let batching_window = match options.batching_windows {
                                true => Duration::from_secs((*batching_window_s).into()),
                                false => Duration::ZERO,
                            };
                            Some(SqsSource {
                                queue_url,
                                queue_arn,
                                batch_size: *batch_size as i32,
                                batching_window,
                            })
                        }
                        _ => None,
                    })
                    .collect();
                if sources.is_empty() {
                    return Err(StackError::MissingEvent {
                        function: id.clone(),
                        event: "SQS",
                    });
                }
                Ok(sources)
            };

        let orchestrate_fn = function("orchestrate")?;
        let route_fn = function("route")?;
        let execute_fn = function("execute-agent")?;
        let learn_fn = function("learn")?;
        let cleanup_fn = function("cleanup")?;
        let stream_fn = function("stream")?;
        if !orchestrate_fn.1.events.contains(&EventSpec::HttpApi) {
            return Err(StackError::MissingEvent {
                function: orchestrate_fn.0.clone(),
                event: "HttpApi",
            });
        }
        let schedule = cleanup_fn.1.events.iter().find_map(|e| match e {
            EventSpec::Schedule { every_s } => Some(Duration::from_secs(*every_s)),
            _ => None,
        });

        let vault = baton_aws::vault::SecretsManagerVault::new(&handler_clients.config);
        // Ready tasks are routed where they become ready, as deployed; without the route
        // function (a test holding tasks back) every one goes through the route queue.
        let run_route = options.run_route;
        let in_place = |routing: RouteDeps<Store, Queues>| match run_route {
            true => InlineRouting::new(routing),
            false => InlineRouting::with_limit(routing, 0),
        };
        let api = {
            let s = settings_of(orchestrate_fn)?;
            let classifier = invokers(&s)?;
            let queue_stats = Arc::new(handler_clients.queue_stats(&s));
            let key = baton_aws::streaming::stream_key(&vault, &s.stream).await?;
            let routing = RouteDeps::new(
                handler_clients.store(&s),
                handler_clients.queues(&s),
                s.clone(),
            );
            let api = Api::new(handler_clients.store(&s), in_place(routing), s)
                .with_classifier(Arc::new(classifier))
                .with_queue_stats(queue_stats)
                .with_vault(Arc::new(baton_aws::vault::SecretsManagerVault::new(
                    &handler_clients.config,
                )));
            Arc::new(match key {
                Some(key) => api.with_stream_key(key),
                None => api,
            })
        };
        let streams = {
            let s = settings_of(stream_fn)?;
            let key = baton_aws::streaming::stream_key(&vault, &s.stream)
                .await?
                .unwrap_or_default();
            Arc::new(baton_stream::StreamDeps {
                store: handler_clients.store(&s),
                settings: s,
                key,
            })
        };
        let route = {
            let s = settings_of(route_fn)?;
            Arc::new(RouteDeps::new(
                handler_clients.store(&s),
                handler_clients.queues(&s),
                s,
            ))
        };
        let execute = {
            let s = settings_of(execute_fn)?;
            let invoker = invokers(&s)?;
            let routing = RouteDeps::new(
                handler_clients.store(&s),
                handler_clients.queues(&s),
                s.clone(),
            );
            Arc::new(ExecuteDeps::new(
                handler_clients.store(&s),
                in_place(routing),
                invoker,
                s,
            ))
        };
        let learn = {
            let s = settings_of(learn_fn)?;
            Arc::new(LearnDeps {
                store: handler_clients.store(&s),
                settings: s,
            })
        };
        let cleanup = {
            let s = settings_of(cleanup_fn)?;
            Arc::new(CleanupDeps {
                store: handler_clients.store(&s),
                queue: handler_clients.queues(&s),
                prober: HttpHealthProber::new(&s.endpoint_policy)
                    .map_err(|e| StackError::Http(e.to_string()))?,
                settings: s,
            })
        };

        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let listener = TcpListener::bind(("127.0.0.1", options.port))
            .await
            .map_err(|source| StackError::Listen {
                port: options.port,
                source,
            })?;
        let api_url = format!(
            "http://{}",
            listener.local_addr().map_err(|source| StackError::Listen {
                port: options.port,
                source
            })?
        );
        {
            let api = api.clone();
            let invocations = invocations.clone();
            tasks.push(tokio::spawn(crate::api_gateway::serve(
                listener,
                move |request| {
                    let api = api.clone();
                    let invocations = invocations.clone();
                    async move {
                        invocations
                            .time(
                                "orchestrate",
                                baton_orchestrate::handle_request(&api, request),
                            )
                            .await
                            .unwrap_or_else(|e| {
                                let id = uuid::Uuid::new_v4().to_string();
                                baton_orchestrate::ApiError::Unavailable(e.to_string())
                                    .into_response(&id)
                            })
                    }
                },
                options.authorizer.clone(),
                stopped.clone(),
            )));
        }
        let stream_invocations = invocations.clone();
        tasks.push(tokio::spawn(crate::function_url::serve(
            stream_listener,
            move |request| {
                let streams = streams.clone();
                let invocations = stream_invocations.clone();
                async move {
                    // Its duration here is the time to its response's head; Lambda bills it
                    // until the streamed body ends.
                    match invocations
                        .time("stream", baton_stream::handle_request(streams, request))
                        .await
                    {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
            },
            stopped.clone(),
        )));
        // Lambda runs several batches of a queue at once; agents can be slow.
        let sqs = clients.sqs.clone();
        let spawn = |tasks: &mut Vec<JoinHandle<()>>,
                     function: &'static str,
                     pollers: usize,
                     sources: Vec<SqsSource>,
                     handler: BatchHandler| {
            for source in sources {
                for _ in 0..pollers {
                    let handler = handler.clone();
                    let invocations = invocations.clone();
                    tasks.push(tokio::spawn(poll_queue(
                        sqs.clone(),
                        source.clone(),
                        move |event| {
                            let invocation = handler(event);
                            let invocations = invocations.clone();
                            async move { invocations.time(function, invocation).await }
                        },
                        deaths.clone(),
                        stopped.clone(),
                    )));
                }
            }
        };
        if options.run_route {
            let deps = route.clone();
            let handler: BatchHandler = Arc::new(move |event| {
                let deps = deps.clone();
                Box::pin(async move { baton_route::handle_batch(&deps, event).await })
            });
            spawn(
                &mut tasks,
                "route",
                options.pollers.max(1),
                sqs_sources(route_fn)?,
                handler,
            );
        }
        if options.run_execute {
            let deps = execute.clone();
            let handler: BatchHandler = Arc::new(move |event| {
                let deps = deps.clone();
                Box::pin(async move { baton_execute_agent::handle_batch(&deps, event).await })
            });
            spawn(
                &mut tasks,
                "execute-agent",
                4,
                sqs_sources(execute_fn)?,
                handler,
            );
        }
        if options.run_learn {
            let deps = learn.clone();
            let handler: BatchHandler = Arc::new(move |event| {
                let deps = deps.clone();
                Box::pin(async move { baton_learn::handle_batch(&deps, event).await })
            });
            spawn(
                &mut tasks,
                "learn",
                options.pollers.max(1),
                sqs_sources(learn_fn)?,
                handler,
            );
        }
        let every = options.sweep_every.or(schedule).unwrap_or(Duration::ZERO);
        if !every.is_zero() {
            let deps = cleanup.clone();
            let invocations = invocations.clone();
            tasks.push(tokio::spawn(tick(
                every,
                move |event| {
                    let deps = deps.clone();
                    let invocations = invocations.clone();
                    async move {
                        invocations
                            .time("cleanup", baton_cleanup::handle_tick(&deps, event))
                            .await
                    }
                },
                deaths.clone(),
                stopped.clone(),
            )));
        }
        Ok(LocalStack {
            api_url,
            stream_url,
            settings: execute.settings.clone(),
            clients,
            provisioned,
            api_calls,
            invocations,
            route,
            execute,
            cleanup,
            stand_ins,
            learn,
            faults,
            deaths,
            stop,
            tasks,
        })
    }

    /// A stack of the project's own template against the emulator at `endpoint`.
    pub async fn start_on_emulator(
        endpoint: &str,
        options: StackOptions,
    ) -> Result<Self, StackError> {
        let template = crate::project_root().join("template.yaml");
        Self::start(&crate::emulator::sdk_config(endpoint), &template, options).await
    }

    /// The route handler's dependencies, to invoke it by hand.
    pub fn route_deps(&self) -> &RouteDeps<Store, Queues> {
        &self.route
    }

    /// The execute-agent handler's dependencies, to invoke it by hand.
    pub fn execute_deps(&self) -> &ExecuteDeps<Store, ExecuteQueues, AgentInvokers> {
        &self.execute
    }

    /// The stand-ins for the Lambda, Bedrock and OpenAI-compatible APIs, when the stack runs
    /// them.
    pub fn stand_ins(&self) -> Option<&StandIns> {
        self.stand_ins.as_ref()
    }

    /// The cleanup handler's dependencies, to run a sweep by hand.
    pub fn cleanup_deps(&self) -> &CleanupDeps<Store, Queues, HttpHealthProber> {
        &self.cleanup
    }

    /// The fault proxy in front of the emulator, if the stack runs with one.
    pub fn faults(&self) -> Option<&FaultProxy> {
        self.faults.as_ref()
    }

    /// How many handler invocations were killed mid-run.
    pub fn handler_deaths(&self) -> u64 {
        self.deaths.count()
    }

    /// Writes an agent straight into the registry, replacing one of the same name (the example
    /// agents, whose ports change when the stack restarts).
    pub async fn put_agent(
        &self,
        tenant: &str,
        registration: baton_types::agent::AgentRegistration,
    ) -> Result<(), String> {
        use baton_chain::store::AgentRegistry;
        let tenant = baton_types::ids::TenantId::parse(tenant).map_err(|e| e.to_string())?;
        let agent = registration
            .into_agent(baton_types::clock::now_ms())
            .map_err(|e| e.to_string())?;
        self.clients
            .store(&self.settings)
            .replace_agent(&tenant, &agent)
            .await
            .map_err(|e| e.to_string())
    }

    /// The learn handler's dependencies, to invoke it by hand.
    pub fn learn_deps(&self) -> &LearnDeps<Store> {
        &self.learn
    }

    /// URL of a queue of the template, by logical id.
    pub fn queue_url(&self, logical_id: &str) -> Option<&str> {
        self.provisioned
            .queues
            .get(logical_id)
            .map(|(url, _)| url.as_str())
    }

    /// Runs the scheduled cleanup once, now, as the schedule would; counted in `invocations`.
    pub async fn sweep_once(&self) -> Result<(), String> {
        let event = crate::event_sources::scheduled_event();
        self.invocations
            .time("cleanup", baton_cleanup::handle_tick(&self.cleanup, event))
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    /// Does at `now_ms` what moto leaves undone: DynamoDB's TTL deletes every item of both
    /// tables whose `expires_at` (seconds) has passed, and the payload bucket's lifecycle rule
    /// deletes every object last written a retention ago. Returns (items, objects) deleted.
    pub async fn expire(&self, now_ms: i64) -> Result<(usize, usize), String> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let now_s = now_ms / 1000;
        let mut items = 0;
        for table in [&self.settings.state_table, &self.settings.memory_table] {
            let mut start = None;
            loop {
                let page = self
                    .clients
                    .dynamodb
                    .scan()
                    .table_name(table)
                    .filter_expression("expires_at <= :now")
                    .expression_attribute_values(":now", AttributeValue::N(now_s.to_string()))
                    .projection_expression("pk, sk")
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| format!("scan {table}: {e}"))?;
                for key in page.items.unwrap_or_default() {
                    self.clients
                        .dynamodb
                        .delete_item()
                        .table_name(table)
                        .set_key(Some(key))
                        .send()
                        .await
                        .map_err(|e| format!("delete from {table}: {e}"))?;
                    items += 1;
                }
                start = page.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        let Some(bucket) = &self.settings.payload_bucket else {
            return Ok((items, 0));
        };
        let s3 = crate::provision::s3_client(&self.clients.config);
        let oldest = now_ms - self.settings.retention.as_millis() as i64;
        let mut objects = 0;
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| format!("list {bucket}: {e}"))?;
            for object in page.contents.unwrap_or_default() {
                let written = object.last_modified.and_then(|t| t.to_millis().ok());
                if written.is_some_and(|at| at <= oldest) {
                    s3.delete_object()
                        .bucket(bucket)
                        .set_key(object.key)
                        .send()
                        .await
                        .map_err(|e| format!("delete from {bucket}: {e}"))?;
                    objects += 1;
                }
            }
            token = page.next_continuation_token;
            if token.is_none() {
                return Ok((items, objects));
            }
        }
    }

    /// Stops every server, poller and ticker, and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
