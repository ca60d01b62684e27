//! Stand-ins for the APIs behind the `lambda`, `bedrock` and `openai` agent kinds, as real
//! HTTP servers on loopback that the real SDK clients and HTTP client call:
//! [`crate::lambda_service`] (Lambda Invoke), [`crate::bedrock_service`] (Bedrock Converse) and
//! [`crate::openai_service`] (Chat Completions). The example OpenAI key is kept where a
//! deployment keeps it: an SSM SecureString parameter and a Secrets Manager secret, in the
//! emulator.
//!
//! The models answer by honest rules, not by generating text: see
//! [`crate::stand_in::ModelRule`].

use aws_config::SdkConfig;
use serde_json::Value;

use crate::openai_service::OpenAiService;
use crate::stand_in::StandIn;

/// The three stand-ins of one local stack, and where the example OpenAI key is kept.
pub struct StandIns {
    pub lambda: StandIn,
    pub bedrock: StandIn,
    pub openai: OpenAiService,
    /// The SSM parameter (SecureString) holding the OpenAI stand-in's key.
    pub key_parameter: String,
    /// The Secrets Manager secret holding the same key, as `{"api_key": …}`.
    pub key_secret_arn: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    #[error("a stand-in could not listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("the example API key could not be stored: {0}")]
    Key(String),
}

impl StandIns {
    /// Starts the stand-ins and stores a fresh key for the OpenAI one under names unique to
    /// `prefix` (written again on a restart against the same emulator).
    pub async fn start(aws: &SdkConfig, prefix: &str) -> Result<Self, StandInError> {
        let key = format!("sk-local-{}", uuid::Uuid::new_v4().simple());
        // In the default tenant's namespace (the examples are its agents), one per stack so
        // that stacks sharing an emulator keep their own keys.
        let key_parameter = format!("/baton/{DEFAULT_TENANT}/{prefix}-openai-api-key");
        let secret_name = format!("baton/{DEFAULT_TENANT}/{prefix}-openai");
        let failed = |e: &dyn std::fmt::Display| StandInError::Key(e.to_string());
        aws_sdk_ssm::Client::new(aws)
            .put_parameter()
            .name(&key_parameter)
            .value(&key)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| failed(&aws_smithy_types::error::display::DisplayErrorContext(e)))?;
        let secrets = aws_sdk_secretsmanager::Client::new(aws);
        let secret = serde_json::json!({ "api_key": key }).to_string();
        let created = secrets
            .create_secret()
            .name(&secret_name)
            .secret_string(&secret)
            .send()
            .await;
        let key_secret_arn = match created {
            Ok(out) => out.arn().unwrap_or_default().to_string(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                secrets
                    .put_secret_value()
                    .secret_id(&secret_name)
                    .secret_string(&secret)
                    .send()
                    .await
                    .map_err(|e| failed(&aws_smithy_types::error::display::DisplayErrorContext(e)))?
                    .arn()
                    .unwrap_or_default()
                    .to_string()
            }
            Err(e) => {
                return Err(failed(
                    &aws_smithy_types::error::display::DisplayErrorContext(e),
                ))
            }
        };
        Ok(StandIns {
            lambda: crate::lambda_service::start().await?,
            bedrock: crate::bedrock_service::start().await?,
            openai: OpenAiService::start(key).await?,
            key_parameter,
            key_secret_arn,
        })
    }

    /// The endpoints the agents' AWS clients take in place of AWS's.
    pub fn endpoints(&self) -> baton_aws::invoker::ServiceEndpoints {
        baton_aws::invoker::ServiceEndpoints {
            lambda: Some(self.lambda.url().to_string()),
            bedrock_runtime: Some(self.bedrock.url().to_string()),
        }
    }

    /// One example agent of each kind the stand-ins serve, as registrations.
    pub fn example_agents(&self) -> Vec<Value> {
        vec![
            serde_json::json!({
                "name": "lambda-summarizer", "kind": "lambda",
                "function": crate::lambda_service::function(
                    DEFAULT_TENANT,
                    crate::lambda_service::SUMMARIZE,
                ),
                "capabilities": ["summarize-text"],
            }),
            serde_json::json!({
                "name": "bedrock-brief", "kind": "bedrock",
                "model_id": crate::bedrock_service::BRIEF_MODEL,
                "system_prompt": "Answer in one sentence.",
                "inference": {"max_tokens": 64, "temperature": 0.2},
                "capabilities": ["brief"],
            }),
            serde_json::json!({
                "name": "openai-keywords", "kind": "openai",
                "base_url": format!("{}/v1", self.openai.url()),
                "model": crate::openai_service::KEYWORDS_MODEL,
                "system_prompt": "List the keywords.",
                "parameters": {"temperature": 0},
                "api_key": self.key_parameter,
                "capabilities": ["keywords"],
            }),
        ]
    }
}

/// The tenant the local stack's examples belong to.
const DEFAULT_TENANT: &str = "default";
