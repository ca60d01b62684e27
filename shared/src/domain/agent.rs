//! Agents: what a team registers, and the rules a registration must pass.

use serde::{Deserialize, Serialize};

use super::circuit::{BreakerInput, BreakerSettings};
use super::conversation::{ConversationRole, Role, MAX_KEYWORDS};
use super::health::{AgentHealth, HealthCheck, HealthCheckInput};
use super::names::{check_name, InvalidName, NameKind};
use super::resources::{check_max_concurrency, parse_resources, Limits, ResourceError, Resources};
use super::retry::{PolicyError, RetryPolicyInput, RetryPolicySpec};

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The execute-agent function's own timeout bounds how long it can wait for an agent.
pub const MAX_TIMEOUT_MS: u64 = 120_000;
pub const MAX_CAPABILITIES: usize = 32;
pub const DEFAULT_WEIGHT: f64 = 1.0;
pub const MIN_WEIGHT: f64 = 0.000_001;
pub const MAX_WEIGHT: f64 = 1_000_000.0;

/// How Baton reaches an agent. Only HTTP agents exist today; Lambda and LLM APIs come later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    #[default]
    Http,
}

/// The body of `POST /v1/agents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRegistration {
    pub name: String,
    #[serde(default)]
    pub kind: AgentKind,
    pub endpoint: String,
    pub capabilities: Vec<String>,
    pub timeout_ms: Option<u64>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Retry policy for tasks run on this agent, where the task and workflow leave it open.
    pub retry: Option<RetryPolicyInput>,
    pub health_check: Option<HealthCheckInput>,
    pub circuit_breaker: Option<BreakerInput>,
    /// The agent's share under the `weighted` strategy (default 1).
    pub weight: Option<f64>,
    /// The most calls Baton has in flight to the agent at once, across every instance.
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
}

fn enabled_by_default() -> bool {
    true
}

/// A registered agent, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub name: String,
    pub kind: AgentKind,
    pub endpoint: String,
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
    /// What the last health probes found; None until the first probe.
    pub health: Option<AgentHealth>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Agent {
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
    #[error("endpoint `{endpoint}` is not a valid http(s) URL: {reason}")]
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
        }
    }
}

impl AgentRegistration {
    /// Validates the registration and turns it into an agent registered at `now_ms`.
    pub fn into_agent(self, now_ms: i64) -> Result<Agent, AgentError> {
        check_name(NameKind::Agent, &self.name)?;
        check_endpoint(&self.endpoint)?;
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
        Ok(Agent {
            name: self.name,
            kind: self.kind,
            endpoint: self.endpoint,
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
            health: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        })
    }
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

fn check_endpoint(endpoint: &str) -> Result<(), AgentError> {
    let fail = |reason: &str| AgentError::Endpoint {
        endpoint: endpoint.chars().take(200).collect(),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(endpoint).map_err(|e| fail(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(fail("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail("credentials in the URL are not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(endpoint: &str) -> AgentRegistration {
        AgentRegistration {
            name: "echo".into(),
            kind: AgentKind::Http,
            endpoint: endpoint.into(),
            capabilities: vec!["echo".into()],
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
        }
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
    fn unknown_kinds_and_fields_are_rejected_by_the_parser() {
        let bad_kind = r#"{"name":"a","kind":"smtp","endpoint":"http://a/","capabilities":["x"]}"#;
        assert!(serde_json::from_str::<AgentRegistration>(bad_kind).is_err());
        let extra = r#"{"name":"a","endpoint":"http://a/","capabilities":["x"],"colour":1}"#;
        assert!(serde_json::from_str::<AgentRegistration>(extra).is_err());
    }
}
