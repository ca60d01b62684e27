//! The invoker the functions use: each call goes to its agent's kind.
//!
//! The agents' AWS APIs (Lambda, Bedrock Runtime, and Secrets Manager and SSM for API keys)
//! are signed requests ([`crate::signed`]) whose HTTP client is built on first use, so a
//! function that only calls http agents spends no start-up time on it. They are never retried
//! in place: a throttled call fails its attempt, and Baton's retry policy schedules the next
//! one (a delayed message; a function never sleeps waiting), where the attempt history shows
//! it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;

use super::secrets::SecretReader;
use super::{bedrock, lambda, openai, HttpAgentInvoker};
use crate::signed::SignedClient;
use baton_chain::config::Settings;
use baton_chain::invoker::{AgentAnswer, AgentCall, AgentInvoker};
use baton_types::agent::{Agent, AgentTarget};
use baton_types::endpoint::EndpointPolicy;
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::tenancy::TenancyPolicy;

/// Endpoints that replace the SDK's for the agents' AWS APIs, for a stand-in. A deployed
/// function has none, unless its environment sets the SDK's own `AWS_ENDPOINT_URL_LAMBDA` or
/// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` (read here: the functions' configuration is not built
/// by the SDK's full loader, which would read them).
#[derive(Debug, Clone, Default)]
pub struct ServiceEndpoints {
    pub lambda: Option<String>,
    pub bedrock_runtime: Option<String>,
}

impl ServiceEndpoints {
    pub fn from_env() -> Self {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        ServiceEndpoints {
            lambda: env("AWS_ENDPOINT_URL_LAMBDA"),
            bedrock_runtime: env("AWS_ENDPOINT_URL_BEDROCK_RUNTIME"),
        }
    }
}

#[derive(Debug)]
pub struct AgentInvokers {
    http: HttpAgentInvoker,
    /// The endpoint guard's client (the http invoker's), for OpenAI-compatible APIs, and the
    /// policy it applies.
    model_api: reqwest::Client,
    policy: EndpointPolicy,
    /// What each tenant may reach: checked again before every call, whatever was registered.
    tenancy: TenancyPolicy,
    /// Signs the calls of the lambda and bedrock kinds and the reads of API keys.
    aws: Arc<SignedClient>,
    endpoints: ServiceEndpoints,
    secrets: SecretReader,
}

impl AgentInvokers {
    /// Invokers that reach http agents and OpenAI-compatible APIs only where the settings'
    /// endpoint policy allows, each tenant only its own secrets, functions and allowed models,
    /// with AWS clients built from `aws` when first needed.
    pub fn new(settings: &Settings, aws: &SdkConfig) -> Result<Self, reqwest::Error> {
        let policy = &settings.endpoint_policy;
        let http = HttpAgentInvoker::new(policy)?;
        let signed = Arc::new(SignedClient::new(aws.clone()));
        Ok(AgentInvokers {
            model_api: http.client().clone(),
            http,
            policy: policy.clone(),
            tenancy: settings.tenancy.clone(),
            secrets: SecretReader::new(signed.clone(), settings.tenancy.clone()),
            aws: signed,
            endpoints: ServiceEndpoints::from_env(),
        })
    }

    pub fn with_endpoints(mut self, endpoints: ServiceEndpoints) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// Whether the client for the agents' AWS APIs has been built (on the first call of a
    /// lambda or bedrock agent, or the first read of an API key; for the start-up cost test).
    pub fn aws_client_built(&self) -> bool {
        self.aws.is_built()
    }
}

/// The call, cut off at its time-out (the SDK's own time-outs are longer).
async fn within<F>(agent: &Agent, call: &AgentCall<'_>, work: F) -> Result<AgentAnswer, TaskFailure>
where
    F: Future<Output = Result<AgentAnswer, TaskFailure>>,
{
    tokio::time::timeout(Duration::from_millis(call.timeout_ms), work)
        .await
        .unwrap_or_else(|_| {
            Err(TaskFailure::new(
                FailureKind::Timeout,
                format!(
                    "agent `{}` did not answer within {} ms",
                    agent.name, call.timeout_ms
                ),
            ))
        })
}

#[async_trait]
impl AgentInvoker for AgentInvokers {
    async fn invoke(
        &self,
        agent: &Agent,
        call: &AgentCall<'_>,
    ) -> Result<AgentAnswer, TaskFailure> {
        // A registration stored before a rule existed, or edited in the table, is refused
        // here as it would be at registration; the message never repeats the reference.
        if let Err(refusal) = self.tenancy.check_agent(&call.task.tenant, agent) {
            return Err(TaskFailure::new(
                FailureKind::ForbiddenReference,
                format!(
                    "agent `{}` is refused for this tenant: {refusal}",
                    agent.name
                ),
            ));
        }
        match &agent.target {
            AgentTarget::Http { .. } => self.http.invoke(agent, call).await,
            AgentTarget::Lambda { function } => {
                let endpoint = self.endpoints.lambda.as_deref();
                let work = lambda::invoke(&self.aws, endpoint, function, call);
                within(agent, call, work).await
            }
            AgentTarget::Openai(target) => {
                let work = openai::complete(
                    &self.model_api,
                    &self.policy,
                    &self.secrets,
                    agent,
                    target,
                    call,
                );
                within(agent, call, work).await
            }
            AgentTarget::Bedrock(target) => {
                let max_tokens = self.tenancy.models.max_tokens;
                let endpoint = self.endpoints.bedrock_runtime.as_deref();
                let work = bedrock::converse(&self.aws, endpoint, target, max_tokens, call);
                within(agent, call, work).await
            }
        }
    }
}
