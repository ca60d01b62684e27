//! The `bedrock` kind: the Bedrock Runtime Converse API.
//!
//! Baton sends the agent's system prompt and the dependencies' outputs as system text blocks,
//! the task's input text as one user message (see [`super::prompt`]), and the agent's
//! inference configuration. The output is `{content, stop_reason, usage: {input_tokens,
//! output_tokens}}`. Throttling and Bedrock's own faults are retried; a request Bedrock
//! refuses (validation, access, an unknown model) and a model's own error are not.

use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput as Reply, InferenceConfiguration, Message,
    SystemContentBlock,
};
use serde_json::{json, Value};

use super::aws::{sdk_failure, ErrorCodes};
use super::{prompt, AgentAnswer, AgentCall};
use crate::domain::agent::{BedrockTarget, InferenceSettings};
use crate::domain::task::{FailureKind, TaskFailure, TokenUsage};

/// Converse's error codes, by whether another try can succeed.
pub const BEDROCK_CODES: ErrorCodes = ErrorCodes {
    retryable: &[
        "ThrottlingException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelNotReadyException",
        "ModelTimeoutException",
    ],
    permanent: &[
        "ValidationException",
        "AccessDeniedException",
        "ResourceNotFoundException",
        "ModelErrorException",
        "ServiceQuotaExceededException",
    ],
};

/// Asks the agent's model; no call asks for more than `max_tokens` output tokens (the
/// operator's cap, also where the agent leaves it open).
pub async fn converse(
    client: &aws_sdk_bedrockruntime::Client,
    target: &BedrockTarget,
    max_tokens: u32,
    call: &AgentCall<'_>,
) -> Result<AgentAnswer, TaskFailure> {
    let subject = format!("model `{}`", target.model_id);
    let system: Vec<SystemContentBlock> =
        prompt::system_texts(target.system_prompt.as_deref(), &call.dependencies)
            .into_iter()
            .map(SystemContentBlock::Text)
            .collect();
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(prompt::input_text(call.input)))
        .build()
        .map_err(|e| {
            TaskFailure::new(
                FailureKind::InvalidInput,
                format!("the message for {subject} could not be built: {e}"),
            )
        })?;
    let out = client
        .converse()
        .model_id(&target.model_id)
        .set_system((!system.is_empty()).then_some(system))
        .messages(message)
        .inference_config(inference_config(
            target
                .inference
                .as_ref()
                .unwrap_or(&InferenceSettings::default()),
            max_tokens,
        ))
        .send()
        .await
        .map_err(|e| sdk_failure("Bedrock", &subject, e, &BEDROCK_CODES))?;
    let content = out.output().map(reply_text);
    let usage = out.usage().map(|u| TokenUsage {
        input_tokens: u64::try_from(u.input_tokens()).unwrap_or(0),
        output_tokens: u64::try_from(u.output_tokens()).unwrap_or(0),
    });
    Ok(AgentAnswer {
        output: answer(content, out.stop_reason().as_str(), usage),
        usage,
    })
}

fn inference_config(settings: &InferenceSettings, cap: u32) -> InferenceConfiguration {
    let max_tokens = settings.max_tokens.map_or(cap, |t| t.min(cap));
    InferenceConfiguration::builder()
        .max_tokens(i32::try_from(max_tokens).unwrap_or(i32::MAX))
        .set_temperature(settings.temperature)
        .set_top_p(settings.top_p)
        .set_stop_sequences(
            (!settings.stop_sequences.is_empty()).then(|| settings.stop_sequences.clone()),
        )
        .build()
}

/// The reply's text blocks, joined; other blocks (tool use, reasoning) are left out.
fn reply_text(reply: &Reply) -> String {
    match reply {
        Reply::Message(message) => message
            .content()
            .iter()
            .filter_map(|block| block.as_text().ok())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The task's output for a Converse reply.
pub fn answer(content: Option<String>, stop_reason: &str, usage: Option<TokenUsage>) -> Value {
    json!({
        "content": content,
        "stop_reason": stop_reason,
        "usage": usage,
    })
}

#[cfg(test)]
mod tests {
    use super::super::aws::service_failure;
    use super::*;

    #[test]
    fn throttling_and_faults_are_retried_and_refusals_are_not() {
        let retryable = |code: &str, status| {
            service_failure("Bedrock", "m", Some(code), None, status, &BEDROCK_CODES).retryable
        };
        for code in [
            "ThrottlingException",
            "ServiceUnavailableException",
            "InternalServerException",
            "ModelNotReadyException",
            "ModelTimeoutException",
        ] {
            assert!(retryable(code, 429), "{code}");
        }
        for code in [
            "ValidationException",
            "AccessDeniedException",
            "ResourceNotFoundException",
        ] {
            assert!(!retryable(code, 400), "{code}");
        }
        // A model error is the model failing on this input: 424, and not retried.
        assert!(!retryable("ModelErrorException", 424));
    }

    #[test]
    fn the_output_carries_the_text_the_stop_reason_and_the_usage() {
        let usage = TokenUsage {
            input_tokens: 9,
            output_tokens: 4,
        };
        assert_eq!(
            answer(Some("Four words, no more.".into()), "end_turn", Some(usage)),
            json!({"content": "Four words, no more.", "stop_reason": "end_turn",
                   "usage": {"input_tokens": 9, "output_tokens": 4}})
        );
    }
}
