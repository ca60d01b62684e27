//! Agents: what a team registers, and the rules a registration must pass.

use serde::{Deserialize, Serialize};

use super::circuit::{BreakerInput, BreakerSettings};
use super::health::{AgentHealth, HealthCheck, HealthCheckInput};
use super::ids::AgentName;
use super::names::{check_name, InvalidName, NameKind};
use super::resources::{check_max_concurrency, parse_resources, Limits, ResourceError, Resources};
use super::retry::{PolicyError, RetryPolicyInput, RetryPolicySpec};
use super::roles::{ConversationRole, Role, MAX_KEYWORDS};

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The execute-agent function's own timeout bounds how long it can wait for an agent.
pub const MAX_TIMEOUT_MS: u64 = 120_000;
pub const MAX_CAPABILITIES: usize = 32;
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
pub const DEFAULT_WEIGHT: f64 = 1.0;
pub const MIN_WEIGHT: f64 = 0.000_001;
pub const MAX_WEIGHT: f64 = 1_000_000.0;

/// How Baton reaches an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// Baton POSTs the call to the agent's endpoint.
    #[default]
    Http,
    /// Baton invokes a Lambda function synchronously.
    Lambda,
    /// Baton asks an OpenAI-compatible Chat Completions API.
    Openai,
    /// Baton asks a Bedrock model through the Converse API.
    Bedrock,
}

impl AgentKind {
    pub const ALL: [AgentKind; 4] = [
        AgentKind::Http,
        AgentKind::Lambda,
        AgentKind::Openai,
        AgentKind::Bedrock,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            AgentKind::Http => "http",
            AgentKind::Lambda => "lambda",
            AgentKind::Openai => "openai",
            AgentKind::Bedrock => "bedrock",
        }
    }

    pub fn parse(name: &str) -> Option<AgentKind> {
        AgentKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// Where an agent of each kind is reached, with what the kind needs to call it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AgentTarget {
    Http {
        endpoint: String,
    },
    Lambda {
        /// A function name, or a partial or full ARN, with an optional `:qualifier`.
        function: String,
    },
    Openai(OpenAiTarget),
    Bedrock(BedrockTarget),
}

impl AgentTarget {
    pub fn kind(&self) -> AgentKind {
        match self {
            AgentTarget::Http { .. } => AgentKind::Http,
            AgentTarget::Lambda { .. } => AgentKind::Lambda,
            AgentTarget::Openai(_) => AgentKind::Openai,
            AgentTarget::Bedrock(_) => AgentKind::Bedrock,
        }
    }
}

/// An OpenAI-compatible Chat Completions API and how to ask it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenAiTarget {
    /// The API's base, e.g. `https://api.openai.com/v1`; Baton POSTs to `{base_url}/chat/completions`.
    pub base_url: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Merged into each request (temperature, max_tokens…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Where the API key is kept (a secret or parameter reference), never the key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// A Bedrock model asked through the Converse API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BedrockTarget {
    pub model_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceSettings>,
}

/// Converse's inference configuration; what is left out, the model decides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InferenceSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
}

/// Where a secret is read from, as named by an `api_key` reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// A Secrets Manager secret, by name or ARN.
    SecretsManager(&'a str),
    /// An SSM parameter, by name or ARN, read with decryption.
    SsmParameter(&'a str),
}

pub const MAX_FUNCTION_CHARS: usize = 170;
pub const MAX_PARAMETER_NAME_CHARS: usize = 2048;
pub const MAX_SECRET_ARN_CHARS: usize = 2048;
pub const MAX_MODEL_CHARS: usize = 256;
pub const MAX_MODEL_ID_CHARS: usize = 2048;
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 32_768;
pub const MAX_PARAMETERS_BYTES: usize = 16_384;
pub const MAX_STOP_SEQUENCES: usize = 16;
/// Request fields Baton sets itself, which `parameters` may not override.
pub const RESERVED_PARAMETERS: [&str; 4] = ["model", "messages", "stream", "n"];

/// The body of `POST /v1/agents`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentRegistration {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)
    )]
    pub name: String,
    /// `http` (the default), `lambda`, `openai` or `bedrock`; read as text so that an unknown
    /// kind is refused naming the field.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<AgentKind>))]
    pub kind: Option<String>,
    /// http: the URL Baton POSTs to.
    pub endpoint: Option<String>,
    /// lambda: the function's name or ARN, with an optional `:qualifier`.
    pub function: Option<String>,
    /// openai: the API's base URL.
    pub base_url: Option<String>,
    /// openai: the model to ask.
    pub model: Option<String>,
    /// bedrock: the model or inference profile to ask.
    pub model_id: Option<String>,
    /// openai and bedrock: the system prompt.
    pub system_prompt: Option<String>,
    /// openai: fields merged into each request.
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// openai: the secret holding the API key, in the tenant's namespace: a Secrets Manager
    /// secret (`baton/{tenant}/openai`, or its ARN) or an SSM parameter
    /// (`/baton/{tenant}/openai`, or its ARN). Never the key itself.
    pub api_key: Option<String>,
    /// bedrock: the inference configuration.
    pub inference: Option<InferenceSettings>,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 32))]
    pub capabilities: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 120000))]
    pub timeout_ms: Option<u64>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Retry policy for tasks run on this agent, where the task and workflow leave it open.
    pub retry: Option<RetryPolicyInput>,
    pub health_check: Option<HealthCheckInput>,
    pub circuit_breaker: Option<BreakerInput>,
    /// The agent's share under the `weighted` strategy (default 1).
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 1000000))]
    pub weight: Option<f64>,
    /// The most calls Baton has in flight to the agent at once, across every instance.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub max_concurrency: Option<i64>,
    /// What the agent can hold at once, by resource name.
    #[serde(default)]
    pub resources: std::collections::BTreeMap<String, serde_json::Value>,
    /// Words and phrases that make a conversation's rules detect this agent.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The kinds of request it handles, matched by the rules too (`meal_planning`).
    #[serde(default)]
    pub task_types: Vec<String>,
    /// Its part in conversations: `{role: core|sync|async|specialist, depends_on?}`.
    pub conversation: Option<ConversationRole>,
    /// Agents this one needs registered and enabled: the registry refuses to delete or
    /// disable them while it is enabled.
    #[cfg_attr(feature = "openapi", schema(schema_with = agent_names))]
    pub requires: Option<Vec<String>>,
    /// Deprecated: the old name of `requires`, still read; giving both is refused.
    #[cfg_attr(feature = "openapi", schema(schema_with = agent_names, deprecated))]
    pub depends_on: Option<Vec<String>>,
    /// A group for people browsing the registry (`finance`, `support`).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length = 64)
    )]
    pub category: Option<String>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
    pub description: Option<String>,
}

/// A list of agent names as a registration's checks take them: distinct, at most
/// [`MAX_KEYWORDS`], each a name the registry could hold.
#[cfg(feature = "openapi")]
fn agent_names() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9][A-Za-z0-9_.-]*$"))
        .max_length(Some(64));
    ArrayBuilder::new()
        .items(name)
        .max_items(Some(MAX_KEYWORDS))
        .unique_items(true)
        .build()
}

fn enabled_by_default() -> bool {
    true
}

/// A registered agent, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub name: AgentName,
    /// The kind (`kind`) and the kind's own fields, flat beside the others.
    #[serde(flatten)]
    pub target: AgentTarget,
    pub capabilities: Vec<String>,
    pub timeout_ms: u64,
    pub enabled: bool,
    pub retry: Option<RetryPolicySpec>,
    pub health_check: Option<HealthCheck>,
    /// The agent's own breaker settings; None: the defaults.
    pub circuit_breaker: Option<BreakerSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRole>,
    /// The agents it needs registered and enabled (the registry's guard). Records written
    /// before the rename say `depends_on`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", alias = "depends_on")]
    pub requires: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the last health probes found; None until the first probe.
    pub health: Option<AgentHealth>,
    /// Counts the registry's changes to the agent: its `ETag`, which `If-Match` names.
    #[serde(default)]
    pub version: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Agent {
    /// The URLs of this agent that the endpoint rules apply to, with the registration field
    /// each came from.
    pub fn urls(&self) -> Vec<(&'static str, &str)> {
        match &self.target {
            AgentTarget::Http { endpoint } => vec![("endpoint", endpoint.as_str())],
            AgentTarget::Openai(target) => vec![("base_url", target.base_url.as_str())],
            AgentTarget::Lambda { .. } | AgentTarget::Bedrock(_) => Vec::new(),
        }
    }

    pub fn kind(&self) -> AgentKind {
        self.target.kind()
    }

    /// The URL of an http agent; other kinds have none.
    pub fn endpoint(&self) -> Option<&str> {
        match &self.target {
            AgentTarget::Http { endpoint } => Some(endpoint),
            _ => None,
        }
    }

    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    pub fn breaker(&self) -> BreakerSettings {
        self.circuit_breaker.unwrap_or_default()
    }

    /// The agent's share under the `weighted` strategy.
    pub fn weight(&self) -> f64 {
        self.weight.unwrap_or(DEFAULT_WEIGHT)
    }

    pub fn limits(&self) -> Limits<'_> {
        Limits {
            max_concurrency: self.max_concurrency,
            capacities: &self.resources,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error("endpoint `{endpoint}` is refused: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("an agent needs at least one capability")]
    NoCapabilities,
    #[error("an agent may have at most {MAX_CAPABILITIES} capabilities")]
    TooManyCapabilities,
    #[error("capability `{0}` is listed more than once")]
    DuplicateCapability(String),
    #[error("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {0}")]
    Timeout(u64),
    #[error(transparent)]
    Policy(PolicyError),
    #[error("weight must be a positive number from {MIN_WEIGHT} to {MAX_WEIGHT}, got {0}")]
    Weight(f64),
    #[error(transparent)]
    Limits(ResourceError),
    #[error("{field}: {reason}")]
    Conversation { field: &'static str, reason: String },
    /// The kind, or one of its target's fields, is missing, misplaced or malformed.
    #[error("{field}: {reason}")]
    Target { field: String, reason: String },
}

impl AgentError {
    /// The request field the error is about, for the API's error details.
    pub fn field(&self) -> String {
        match self {
            AgentError::Name(n) if n.kind == NameKind::Capability => "capabilities".into(),
            AgentError::Name(_) => "name".into(),
            AgentError::Endpoint { .. } => "endpoint".into(),
            AgentError::NoCapabilities
            | AgentError::TooManyCapabilities
            | AgentError::DuplicateCapability(_) => "capabilities".into(),
            AgentError::Timeout(_) => "timeout_ms".into(),
            AgentError::Policy(e) => e.field.clone(),
            AgentError::Weight(_) => "weight".into(),
            AgentError::Limits(e) => e.field.clone(),
            AgentError::Conversation { field, .. } => (*field).into(),
            AgentError::Target { field, .. } => field.clone(),
        }
    }
}

impl AgentRegistration {
    /// Validates the registration and turns it into an agent registered at `now_ms`.
    pub fn into_agent(self, now_ms: i64) -> Result<Agent, AgentError> {
        let name = AgentName::parse(&self.name)?;
        if super::names::RESERVED_NAMES.contains(&self.name.as_str()) {
            return Err(target_error(
                "name",
                format!(
                    "`{}` is the name of a registry route; choose another",
                    self.name
                ),
            ));
        }
        let target = self.target()?;
        if self.health_check.is_some() && target.kind() != AgentKind::Http {
            return Err(target_error(
                "health_check",
                format!(
                    "health checks probe http endpoints; a {} agent has none",
                    target.kind().as_str()
                ),
            ));
        }
        if self.capabilities.is_empty() {
            return Err(AgentError::NoCapabilities);
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(AgentError::TooManyCapabilities);
        }
        for (i, capability) in self.capabilities.iter().enumerate() {
            check_name(NameKind::Capability, capability)?;
            if self.capabilities[..i].contains(capability) {
                return Err(AgentError::DuplicateCapability(capability.clone()));
            }
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(AgentError::Timeout(timeout_ms));
        }
        let under =
            |prefix: &'static str| move |e: PolicyError| AgentError::Policy(e.under(prefix));
        let retry = self
            .retry
            .as_ref()
            .map(|r| r.validate().map_err(under("retry")))
            .transpose()?
            .filter(|r| !r.is_empty());
        let health_check = self
            .health_check
            .as_ref()
            .map(|h| h.validate().map_err(under("health_check")))
            .transpose()?;
        let circuit_breaker = self
            .circuit_breaker
            .as_ref()
            .map(|b| b.validate().map_err(under("circuit_breaker")))
            .transpose()?;
        if let Some(weight) = self.weight {
            if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&weight) {
                return Err(AgentError::Weight(weight));
            }
        }
        let max_concurrency =
            check_max_concurrency(self.max_concurrency).map_err(AgentError::Limits)?;
        let resources =
            parse_resources("resources", &self.resources).map_err(AgentError::Limits)?;
        let keywords = check_keywords(self.keywords)?;
        let task_types = check_terms("task_types", self.task_types, NameKind::Capability)?;
        if let Some(conversation) = &self.conversation {
            check_conversation(&self.name, conversation)?;
        }
        let requires = match (self.requires, self.depends_on) {
            (Some(_), Some(_)) => {
                return Err(target_error(
                    "requires",
                    "give `requires` or its deprecated name `depends_on`, not both",
                ))
            }
            (requires, depends_on) => requires.or(depends_on).unwrap_or_default(),
        };
        let requires = check_terms("requires", requires, NameKind::Agent)?;
        if requires.contains(&self.name) {
            return Err(target_error(
                "requires",
                format!("`{}` cannot require itself", self.name),
            ));
        }
        let category = self
            .category
            .map(|c| check_name(NameKind::Capability, &c).map(|()| c))
            .transpose()
            .map_err(|e| target_error("category", e.to_string()))?;
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            return Err(target_error(
                "description",
                format!("at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        Ok(Agent {
            name,
            target,
            capabilities: self.capabilities,
            timeout_ms,
            enabled: self.enabled,
            retry,
            health_check,
            circuit_breaker,
            weight: self.weight,
            max_concurrency,
            resources,
            keywords,
            task_types,
            conversation: self.conversation,
            requires,
            category,
            description: self.description,
            health: None,
            version: 1,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        })
    }
}

impl AgentRegistration {
    /// An http agent's registration with every optional field left out.
    pub fn http(name: &str, endpoint: &str, capabilities: &[&str]) -> AgentRegistration {
        AgentRegistration {
            name: name.into(),
            kind: None,
            endpoint: Some(endpoint.into()),
            function: None,
            base_url: None,
            model: None,
            model_id: None,
            system_prompt: None,
            parameters: None,
            api_key: None,
            inference: None,
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            timeout_ms: None,
            enabled: true,
            retry: None,
            health_check: None,
            circuit_breaker: None,
            weight: None,
            max_concurrency: None,
            resources: Default::default(),
            keywords: Vec::new(),
            task_types: Vec::new(),
            conversation: None,
            requires: None,
            depends_on: None,
            category: None,
            description: None,
        }
    }

    /// The kind and its target, from the flat fields: each kind takes its own fields and
    /// refuses another kind's, so a typo in `kind` cannot silently drop a field.
    fn target(&self) -> Result<AgentTarget, AgentError> {
        let kind = match self.kind.as_deref() {
            None => AgentKind::Http,
            Some(name) => AgentKind::parse(name).ok_or_else(|| {
                target_error(
                    "kind",
                    format!(
                        "unknown kind `{}`; the kinds are http, lambda, openai and bedrock",
                        name.chars().take(40).collect::<String>()
                    ),
                )
            })?,
        };
        // Which kinds each target field belongs to.
        let fields: [(&str, bool, &[AgentKind]); 9] = [
            ("endpoint", self.endpoint.is_some(), &[AgentKind::Http]),
            ("function", self.function.is_some(), &[AgentKind::Lambda]),
            ("base_url", self.base_url.is_some(), &[AgentKind::Openai]),
            ("model", self.model.is_some(), &[AgentKind::Openai]),
            (
                "parameters",
                self.parameters.is_some(),
                &[AgentKind::Openai],
            ),
            ("api_key", self.api_key.is_some(), &[AgentKind::Openai]),
            ("model_id", self.model_id.is_some(), &[AgentKind::Bedrock]),
            ("inference", self.inference.is_some(), &[AgentKind::Bedrock]),
            (
                "system_prompt",
                self.system_prompt.is_some(),
                &[AgentKind::Openai, AgentKind::Bedrock],
            ),
        ];
        for (field, present, kinds) in fields {
            if present && !kinds.contains(&kind) {
                let owners: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                return Err(target_error(
                    field,
                    format!(
                        "`{field}` applies to {} agents, not {}",
                        owners.join(" and "),
                        kind.as_str()
                    ),
                ));
            }
        }
        let required = |field: &'static str, value: &Option<String>| {
            value.clone().ok_or_else(|| {
                target_error(
                    field,
                    format!("{} {} agent needs `{field}`", article(kind), kind.as_str()),
                )
            })
        };
        let system_prompt = self
            .system_prompt
            .as_deref()
            .map(check_system_prompt)
            .transpose()?;
        Ok(match kind {
            AgentKind::Http => {
                let endpoint = required("endpoint", &self.endpoint)?;
                check_endpoint(&endpoint)?;
                AgentTarget::Http { endpoint }
            }
            AgentKind::Lambda => {
                let function = required("function", &self.function)?;
                check_function(&function)?;
                AgentTarget::Lambda { function }
            }
            AgentKind::Openai => {
                let base_url = required("base_url", &self.base_url)?;
                check_endpoint(&base_url).map_err(|e| match e {
                    AgentError::Endpoint { reason, .. } => {
                        target_error("base_url", format!("refused: {reason}"))
                    }
                    other => other,
                })?;
                let model = required("model", &self.model)?;
                check_model("model", &model, MAX_MODEL_CHARS)?;
                if let Some(parameters) = &self.parameters {
                    check_parameters(parameters)?;
                }
                if let Some(reference) = &self.api_key {
                    secret_source(reference)?;
                }
                AgentTarget::Openai(OpenAiTarget {
                    base_url,
                    model,
                    system_prompt,
                    parameters: self.parameters.clone().filter(|p| !p.is_empty()),
                    api_key: self.api_key.clone(),
                })
            }
            AgentKind::Bedrock => {
                let model_id = required("model_id", &self.model_id)?;
                check_model("model_id", &model_id, MAX_MODEL_ID_CHARS)?;
                if let Some(inference) = &self.inference {
                    check_inference(inference)?;
                }
                AgentTarget::Bedrock(BedrockTarget {
                    model_id,
                    system_prompt,
                    inference: self.inference.clone(),
                })
            }
        })
    }
}

fn target_error(field: &str, reason: impl Into<String>) -> AgentError {
    AgentError::Target {
        field: field.into(),
        reason: reason.into(),
    }
}

fn article(kind: AgentKind) -> &'static str {
    match kind {
        AgentKind::Http | AgentKind::Openai => "an",
        AgentKind::Lambda | AgentKind::Bedrock => "a",
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A function name (`name`), partial ARN (`123456789012:function:name`) or full ARN
/// (`arn:aws:lambda:us-east-1:123456789012:function:name`), each with an optional
/// `:qualifier` (a version or alias): the shapes Lambda's `Invoke` accepts.
fn check_function(function: &str) -> Result<(), AgentError> {
    let fail = |reason: &str| {
        Err(target_error(
            "function",
            format!("must be a Lambda function name or ARN with an optional :qualifier: {reason}"),
        ))
    };
    if function.is_empty() || function.chars().count() > MAX_FUNCTION_CHARS {
        return fail(&format!("it has 1 to {MAX_FUNCTION_CHARS} characters"));
    }
    let parts: Vec<&str> = function.split(':').collect();
    let is_account = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    let (name, qualifier) = match parts.as_slice() {
        ["arn", partition, "lambda", region, account, "function", rest @ ..] => {
            if !partition.starts_with("aws")
                || region.is_empty()
                || !region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                || !is_account(account)
            {
                return fail("the ARN's partition, region or account is malformed");
            }
            match rest {
                [name] => (*name, None),
                [name, qualifier] => (*name, Some(*qualifier)),
                _ => return fail("the ARN does not end in function:name[:qualifier]"),
            }
        }
        [account, "function", name] if is_account(account) => (*name, None),
        [account, "function", name, qualifier] if is_account(account) => (*name, Some(*qualifier)),
        [name] => (*name, None),
        [name, qualifier] => (*name, Some(*qualifier)),
        _ => return fail("it has too many `:` parts"),
    };
    if name.is_empty() || name.len() > 64 || !name.chars().all(is_name_char) {
        return fail("the name has 1 to 64 letters, digits, - or _");
    }
    if let Some(qualifier) = qualifier {
        let valid = qualifier == "$LATEST"
            || (!qualifier.is_empty()
                && qualifier.len() <= 128
                && qualifier.chars().all(is_name_char));
        if !valid {
            return fail("the qualifier is $LATEST, a version or an alias");
        }
    }
    Ok(())
}

/// Where an `api_key` reference points, by its shape: a Secrets Manager secret by ARN or by
/// name (`baton/acme/openai`), or an SSM parameter by ARN or by its hierarchical name
/// (`/baton/acme/openai`). Whose namespace it lies in is [`super::tenancy`]'s question.
pub fn secret_source(reference: &str) -> Result<SecretSource<'_>, AgentError> {
    let fail = || {
        Err(target_error(
            "api_key",
            "must reference the key, never hold it: a Secrets Manager secret's name \
             (baton/<tenant>/<name>) or ARN, or an SSM parameter's name \
             (/baton/<tenant>/<name>) or ARN",
        ))
    };
    if reference.starts_with("arn:") {
        if reference.len() > MAX_SECRET_ARN_CHARS
            || reference
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return fail();
        }
        let parts: Vec<&str> = reference.splitn(6, ':').collect();
        let [_, partition, service, region, account, resource] = parts.as_slice() else {
            return fail();
        };
        let well_formed = partition.starts_with("aws")
            && !region.is_empty()
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit());
        return match (*service, resource.split_once([':', '/'])) {
            ("secretsmanager", Some(("secret", name))) if well_formed && !name.is_empty() => {
                Ok(SecretSource::SecretsManager(reference))
            }
            ("ssm", Some(("parameter", name))) if well_formed && !name.is_empty() => {
                Ok(SecretSource::SsmParameter(reference))
            }
            _ => fail(),
        };
    }
    if let Some(path) = reference.strip_prefix('/') {
        let name_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/');
        if path.is_empty()
            || reference.len() > MAX_PARAMETER_NAME_CHARS
            || !reference.chars().all(name_chars)
        {
            return fail();
        }
        return Ok(SecretSource::SsmParameter(reference));
    }
    // Secrets Manager's name alphabet; a name is at most 512 characters.
    let name_chars =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '=' | '.' | '@' | '-');
    if reference.is_empty() || reference.len() > 512 || !reference.chars().all(name_chars) {
        return fail();
    }
    Ok(SecretSource::SecretsManager(reference))
}

fn check_model(field: &'static str, model: &str, max: usize) -> Result<(), AgentError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '_' | '/');
    if model.is_empty() || model.len() > max || !model.chars().all(allowed) {
        return Err(target_error(
            field,
            format!("has 1 to {max} letters, digits, . : - _ or /"),
        ));
    }
    Ok(())
}

fn check_system_prompt(prompt: &str) -> Result<String, AgentError> {
    if prompt.trim().is_empty() || prompt.chars().count() > MAX_SYSTEM_PROMPT_CHARS {
        return Err(target_error(
            "system_prompt",
            format!("has 1 to {MAX_SYSTEM_PROMPT_CHARS} characters"),
        ));
    }
    Ok(prompt.to_string())
}

fn check_parameters(
    parameters: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), AgentError> {
    if let Some(reserved) = RESERVED_PARAMETERS
        .iter()
        .find(|r| parameters.contains_key(**r))
    {
        return Err(target_error(
            &format!("parameters.{reserved}"),
            format!("Baton sets `{reserved}` itself"),
        ));
    }
    let size = serde_json::to_vec(parameters).map_or(usize::MAX, |v| v.len());
    if size > MAX_PARAMETERS_BYTES {
        return Err(target_error(
            "parameters",
            format!("at most {MAX_PARAMETERS_BYTES} bytes of JSON"),
        ));
    }
    Ok(())
}

fn check_inference(inference: &InferenceSettings) -> Result<(), AgentError> {
    if inference.max_tokens == Some(0) {
        return Err(target_error("inference.max_tokens", "must be at least 1"));
    }
    for (field, value) in [
        ("inference.temperature", inference.temperature),
        ("inference.top_p", inference.top_p),
    ] {
        if value.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return Err(target_error(field, "must be between 0 and 1"));
        }
    }
    let stops = &inference.stop_sequences;
    if stops.len() > MAX_STOP_SEQUENCES || stops.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(target_error(
            "inference.stop_sequences",
            format!("at most {MAX_STOP_SEQUENCES} sequences of 1 to 256 bytes"),
        ));
    }
    Ok(())
}

/// Keywords, trimmed and lower-cased: the rules compare lower-case words.
fn check_keywords(keywords: Vec<String>) -> Result<Vec<String>, AgentError> {
    let keywords: Vec<String> = keywords.iter().map(|k| k.trim().to_lowercase()).collect();
    let fail = |reason: String| AgentError::Conversation {
        field: "keywords",
        reason,
    };
    if keywords.len() > MAX_KEYWORDS {
        return Err(fail(format!("at most {MAX_KEYWORDS} keywords")));
    }
    for (i, keyword) in keywords.iter().enumerate() {
        if keyword.is_empty() || keyword.chars().count() > 64 {
            return Err(fail("each keyword has 1 to 64 characters".into()));
        }
        if keywords[..i].contains(keyword) {
            return Err(fail(format!("`{keyword}` is listed more than once")));
        }
    }
    Ok(keywords)
}

fn check_terms(
    field: &'static str,
    terms: Vec<String>,
    kind: NameKind,
) -> Result<Vec<String>, AgentError> {
    let fail = |reason: String| AgentError::Conversation { field, reason };
    if terms.len() > MAX_KEYWORDS {
        return Err(fail(format!("at most {MAX_KEYWORDS} entries")));
    }
    for (i, term) in terms.iter().enumerate() {
        check_name(kind, term).map_err(|e| fail(e.to_string()))?;
        if terms[..i].contains(term) {
            return Err(fail(format!("`{term}` is listed more than once")));
        }
    }
    Ok(terms)
}

fn check_conversation(name: &str, conversation: &ConversationRole) -> Result<(), AgentError> {
    let field = "conversation.depends_on";
    let depends_on = check_terms(field, conversation.depends_on.clone(), NameKind::Agent)?;
    if !depends_on.is_empty() && conversation.role != Role::Sync {
        return Err(AgentError::Conversation {
            field,
            reason: "only sync agents depend on others (the core agent waits for every sync agent)"
                .into(),
        });
    }
    if depends_on.iter().any(|d| d == name) {
        return Err(AgentError::Conversation {
            field,
            reason: format!("`{name}` cannot depend on itself"),
        });
    }
    Ok(())
}

/// The URL rules that need no deployment settings (see [`super::endpoint`]); the API adds
/// the deployment's allow-lists and checks what the host resolves to before storing.
fn check_endpoint(endpoint: &str) -> Result<(), AgentError> {
    super::endpoint::check_url_shape(endpoint)
        .map(drop)
        .map_err(|e| AgentError::Endpoint {
            endpoint: endpoint.chars().take(200).collect(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(endpoint: &str) -> AgentRegistration {
        AgentRegistration::http("echo", endpoint, &["echo"])
    }

    #[test]
    fn valid_registration_gets_the_default_timeout() {
        let agent = registration("http://127.0.0.1:9000/run")
            .into_agent(5)
            .unwrap();
        assert_eq!(agent.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(agent.created_at_ms, 5);
    }

    #[test]
    fn bad_urls_are_rejected() {
        for bad in ["not a url", "ftp://x/y", "http://", "https://u:p@host/"] {
            let err = registration(bad).into_agent(0).unwrap_err();
            assert_eq!(err.field(), "endpoint", "{bad}");
        }
    }

    #[test]
    fn capabilities_must_be_present_and_distinct() {
        let mut r = registration("http://a/");
        r.capabilities = vec![];
        assert_eq!(r.into_agent(0).unwrap_err(), AgentError::NoCapabilities);
        let mut r = registration("http://a/");
        r.capabilities = vec!["x".into(), "x".into()];
        assert_eq!(
            r.into_agent(0).unwrap_err(),
            AgentError::DuplicateCapability("x".into())
        );
    }

    #[test]
    fn timeout_is_bounded() {
        let mut r = registration("http://a/");
        r.timeout_ms = Some(MAX_TIMEOUT_MS + 1);
        assert!(matches!(r.into_agent(0), Err(AgentError::Timeout(_))));
    }

    #[test]
    fn policies_are_validated_and_errors_name_their_field() {
        let with = |json: &str| -> AgentRegistration {
            let mut value: serde_json::Value =
                serde_json::from_str(r#"{"name":"a","endpoint":"http://a/","capabilities":["x"]}"#)
                    .unwrap();
            let extra: serde_json::Value = serde_json::from_str(json).unwrap();
            value
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(value).unwrap()
        };
        let err = with(r#"{"retry": {"max_attempts": 12}}"#)
            .into_agent(0)
            .unwrap_err();
        assert_eq!(err.field(), "retry.max_attempts");
        let err = with(r#"{"health_check": {"path": "health"}}"#)
            .into_agent(0)
            .unwrap_err();
        assert_eq!(err.field(), "health_check.path");
        let err = with(r#"{"circuit_breaker": {"failure_rate": 0}}"#)
            .into_agent(0)
            .unwrap_err();
        assert_eq!(err.field(), "circuit_breaker.failure_rate");
        let agent = with(r#"{"retry": {"max_attempts": 4}, "health_check": {"path": "/h"}}"#)
            .into_agent(0)
            .unwrap();
        assert_eq!(agent.retry.unwrap().max_attempts, Some(4));
        assert_eq!(agent.health_check.unwrap().interval_s, 60);
        for (extra, field) in [
            (r#"{"weight": 0}"#, "weight"),
            (r#"{"weight": -2.5}"#, "weight"),
            (r#"{"max_concurrency": 0}"#, "max_concurrency"),
            (r#"{"resources": {"gpus": 1}}"#, "resources.gpus"),
            (r#"{"resources": {"gpu": -1}}"#, "resources.gpu"),
            (r#"{"resources": {"gpu": 1.5}}"#, "resources.gpu"),
        ] {
            assert_eq!(
                with(extra).into_agent(0).unwrap_err().field(),
                field,
                "{extra}"
            );
        }
        let agent = with(r#"{"weight": 2, "max_concurrency": 4, "resources": {"gpu": 2}}"#)
            .into_agent(0)
            .unwrap();
        assert_eq!((agent.weight(), agent.max_concurrency), (2.0, Some(4)));
        assert_eq!(agent.resources["gpu"], 2);
    }

    #[test]
    fn unknown_fields_are_rejected_by_the_parser() {
        let extra = r#"{"name":"a","endpoint":"http://a/","capabilities":["x"],"colour":1}"#;
        assert!(serde_json::from_str::<AgentRegistration>(extra).is_err());
    }

    fn parse(json: serde_json::Value) -> Result<Agent, AgentError> {
        let mut body = serde_json::json!({"name": "a", "capabilities": ["x"]});
        body.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        serde_json::from_value::<AgentRegistration>(body)
            .unwrap()
            .into_agent(0)
    }

    fn field_of(json: serde_json::Value) -> String {
        parse(json.clone()).map_or_else(|e| e.field(), |_| panic!("{json} was accepted"))
    }

    #[test]
    fn each_kind_builds_its_target() {
        let lambda = parse(serde_json::json!({"kind": "lambda", "function": "baton-agent-x:live"}));
        assert_eq!(
            lambda.unwrap().target,
            AgentTarget::Lambda {
                function: "baton-agent-x:live".into()
            }
        );
        let openai = parse(serde_json::json!({
            "kind": "openai", "base_url": "https://api.example.com/v1", "model": "gpt-4o-mini",
            "parameters": {"temperature": 0.2}, "api_key": "/baton/openai",
        }))
        .unwrap();
        assert_eq!(openai.kind(), AgentKind::Openai);
        assert_eq!(openai.endpoint(), None);
        let bedrock = parse(serde_json::json!({
            "kind": "bedrock", "model_id": "anthropic.claude-3-haiku-20240307-v1:0",
            "system_prompt": "Be brief.", "inference": {"max_tokens": 200, "temperature": 0.5},
        }))
        .unwrap();
        let AgentTarget::Bedrock(target) = &bedrock.target else {
            panic!("{bedrock:?}")
        };
        assert_eq!(target.inference.as_ref().unwrap().max_tokens, Some(200));
        let http = parse(serde_json::json!({"endpoint": "http://a/"})).unwrap();
        assert_eq!(http.endpoint(), Some("http://a/"));
    }

    #[test]
    fn the_stored_shape_is_flat_and_round_trips() {
        let agent = parse(serde_json::json!({"kind": "lambda", "function": "f"})).unwrap();
        let value = serde_json::to_value(&agent).unwrap();
        assert_eq!(
            (value["kind"].as_str(), value["function"].as_str()),
            (Some("lambda"), Some("f"))
        );
        assert_eq!(serde_json::from_value::<Agent>(value).unwrap(), agent);
    }

    #[test]
    fn a_kind_missing_its_target_or_given_another_kinds_fields_is_refused_by_field() {
        use serde_json::json;
        assert_eq!(
            field_of(json!({"kind": "smtp", "endpoint": "http://a/"})),
            "kind"
        );
        assert_eq!(field_of(json!({})), "endpoint");
        assert_eq!(field_of(json!({"kind": "lambda"})), "function");
        assert_eq!(
            field_of(json!({"kind": "openai", "base_url": "https://a/"})),
            "model"
        );
        assert_eq!(
            field_of(json!({"kind": "openai", "model": "m"})),
            "base_url"
        );
        assert_eq!(field_of(json!({"kind": "bedrock"})), "model_id");
        assert_eq!(
            field_of(json!({"kind": "http", "endpoint": "http://a/", "function": "f"})),
            "function"
        );
        assert_eq!(
            field_of(json!({"kind": "lambda", "function": "f", "system_prompt": "hi"})),
            "system_prompt"
        );
        let err =
            parse(json!({"kind": "lambda", "function": "f", "endpoint": "http://a/"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "endpoint: `endpoint` applies to http agents, not lambda"
        );
        let err = parse(json!({"kind": "openai", "base_url": "https://a/"})).unwrap_err();
        assert_eq!(err.to_string(), "model: an openai agent needs `model`");
        assert_eq!(
            field_of(json!({"kind": "lambda", "function": "f", "health_check": {"path": "/h"}})),
            "health_check"
        );
    }

    #[test]
    fn function_names_and_arns_take_lambdas_shapes() {
        for good in [
            "summarize",
            "baton-agent-summarize:live",
            "baton_agent:$LATEST",
            "123456789012:function:summarize",
            "123456789012:function:summarize:3",
            "arn:aws:lambda:eu-west-1:123456789012:function:summarize",
            "arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:summarize:prod",
        ] {
            assert!(check_function(good).is_ok(), "{good}");
        }
        let long = "f".repeat(MAX_FUNCTION_CHARS + 1);
        for bad in [
            "",
            long.as_str(),
            "has space",
            "a:b:c",
            "name:bad qualifier",
            "arn:aws:lambda:eu-west-1:12345:function:summarize",
            "arn:aws:s3:eu-west-1:123456789012:function:summarize",
            "arn:aws:lambda:eu-west-1:123456789012:function:a:b:c",
        ] {
            assert!(check_function(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_references_are_names_or_arns_never_keys() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:baton/openai-AbCdEf";
        assert_eq!(secret_source(arn), Ok(SecretSource::SecretsManager(arn)));
        let arn = "arn:aws:ssm:us-east-1:123456789012:parameter/baton/openai";
        assert_eq!(secret_source(arn), Ok(SecretSource::SsmParameter(arn)));
        for name in ["/baton/openai", "/a.b-c"] {
            assert_eq!(secret_source(name), Ok(SecretSource::SsmParameter(name)));
        }
        for name in ["baton/acme/openai", "openai_key"] {
            assert_eq!(secret_source(name), Ok(SecretSource::SecretsManager(name)));
        }
        for bad in [
            "",
            "/",
            "sk-live abc",
            "sk+key=\n",
            "arn:aws:s3:::bucket/key",
            "arn:aws:secretsmanager:us-east-1:123456789012:parameter/x",
            "arn:aws:ssm:us-east-1:1234:parameter/x",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
        ] {
            let err = secret_source(bad).unwrap_err();
            assert_eq!(err.field(), "api_key", "{bad}");
            assert!(!err.to_string().contains(bad) || bad.len() < 2, "{bad}");
        }
    }

    #[test]
    fn openai_parameters_and_bedrock_inference_are_checked() {
        use serde_json::json;
        let openai = |parameters: serde_json::Value| json!({"kind": "openai", "base_url": "https://a/v1", "model": "m", "parameters": parameters});
        assert_eq!(
            field_of(openai(json!({"model": "other"}))),
            "parameters.model"
        );
        assert_eq!(
            field_of(openai(json!({"stream": true}))),
            "parameters.stream"
        );
        assert!(parse(openai(json!({"max_tokens": 50}))).is_ok());
        let bedrock = |inference: serde_json::Value| json!({"kind": "bedrock", "model_id": "m", "inference": inference});
        assert_eq!(
            field_of(bedrock(json!({"max_tokens": 0}))),
            "inference.max_tokens"
        );
        assert_eq!(field_of(bedrock(json!({"top_p": 1.5}))), "inference.top_p");
        assert_eq!(
            field_of(bedrock(json!({"stop_sequences": [""]}))),
            "inference.stop_sequences"
        );
        assert_eq!(
            field_of(json!({"kind": "openai", "base_url": "ftp://a/", "model": "m"})),
            "base_url"
        );
    }
}
