//! What belongs to a tenant: every reference a registration gives (a secret, a parameter, a
//! function, a model) must point inside the tenant's own namespace or the operator's
//! allow-list. The same check runs when an agent is registered and again before every call,
//! so a registration stored before a rule existed cannot slip through.
//!
//! - Secrets Manager secrets are named `{secret prefix}{tenant}/{name}` (default
//!   `baton/acme/openai`), SSM parameters `{parameter prefix}{tenant}/{name}` (default
//!   `/baton/acme/openai`). A `/` cannot occur in a tenant id, so one tenant's namespace
//!   never contains another's.
//! - Lambda functions are named `{function prefix}{tenant}-{name}` (default
//!   `baton-agent-acme-summarize`), where `name` has letters, digits and `_` only. The tenant
//!   is what lies between the prefix and the last `-`, so tenant `a` cannot claim tenant
//!   `a-b`'s function `baton-agent-a-b-x` (its name part would be `b-x`, which holds a `-`).
//! - Bedrock models come from the operator's allow-list, and no call asks for more output
//!   tokens than the operator's cap.
//!
//! Refusals never repeat the reference they refuse: a pasted key must not be echoed back.

use super::agent::{Agent, AgentError, AgentTarget, SecretSource};

/// Where the operator keeps tenants' secrets, parameters and functions (template parameters
/// `TenantSecretPrefix`, `AgentParameterPrefix`, `AgentFunctionPrefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    pub secret_prefix: String,
    pub parameter_prefix: String,
    pub function_prefix: String,
}

pub const DEFAULT_SECRET_PREFIX: &str = "baton/";
pub const DEFAULT_PARAMETER_PREFIX: &str = "/baton/";
pub const DEFAULT_FUNCTION_PREFIX: &str = "baton-agent-";
/// The output tokens a bedrock call may ask for when the operator set no cap.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            secret_prefix: DEFAULT_SECRET_PREFIX.into(),
            parameter_prefix: DEFAULT_PARAMETER_PREFIX.into(),
            function_prefix: DEFAULT_FUNCTION_PREFIX.into(),
        }
    }
}

impl Namespaces {
    /// The Secrets Manager name prefix of the tenant's secrets (`baton/acme/`).
    pub fn secret_root(&self, tenant: &str) -> String {
        format!("{}{tenant}/", self.secret_prefix)
    }

    /// The full Secrets Manager name of the tenant's secret `name` (`baton/acme/openai`).
    pub fn secret_name(&self, tenant: &str, name: &str) -> String {
        format!("{}{name}", self.secret_root(tenant))
    }

    /// The SSM name prefix of the tenant's parameters (`/baton/acme/`).
    pub fn parameter_root(&self, tenant: &str) -> String {
        format!("{}{tenant}/", self.parameter_prefix)
    }

    /// The Lambda name prefix of the tenant's functions (`baton-agent-acme-`).
    pub fn function_root(&self, tenant: &str) -> String {
        format!("{}{tenant}-", self.function_prefix)
    }

    /// Whether a secret reference, already read for its shape, names one of the tenant's own.
    pub fn owns_secret(&self, tenant: &str, source: &SecretSource<'_>) -> bool {
        match source {
            SecretSource::SecretsManager(reference) => {
                let name = reference
                    .strip_prefix("arn:")
                    .and_then(|_| reference.split_once(":secret:"))
                    .map_or(*reference, |(_, name)| name);
                within(name, &self.secret_root(tenant))
            }
            SecretSource::SsmParameter(reference) => {
                // An ARN drops a hierarchical name's leading `/`: `…:parameter/baton/acme/x`.
                let name = match reference.split_once(":parameter/") {
                    Some((_, path)) if reference.starts_with("arn:") => format!("/{path}"),
                    _ => reference.to_string(),
                };
                within(&name, &self.parameter_root(tenant))
            }
        }
    }

    /// Whether a function reference (name, partial or full ARN, optional qualifier) names one
    /// of the tenant's functions.
    pub fn owns_function(&self, tenant: &str, function: &str) -> bool {
        let name = function_name(function);
        name.strip_prefix(&self.function_root(tenant))
            .is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
    }
}

/// `name` lies strictly inside `root`, with a path that cannot climb out of it.
fn within(name: &str, root: &str) -> bool {
    name.strip_prefix(root).is_some_and(|rest| {
        !rest.is_empty()
            && !rest.starts_with('/')
            && !rest.ends_with('/')
            && !rest.contains("//")
            && rest.split('/').all(|part| part != "." && part != "..")
    })
}

/// The function's own name in any of the shapes Lambda's `Invoke` accepts.
fn function_name(function: &str) -> &str {
    let parts: Vec<&str> = function.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, _, "function", name, ..] => name,
        [_, "function", name, ..] => name,
        [name, ..] => name,
        [] => function,
    }
}

/// The Bedrock models tenants may ask, and how much output any call may ask for (template
/// parameters `BedrockModelIds` and `BedrockMaxTokens`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPolicy {
    /// Model or inference-profile ids, exactly as registrations name them; empty: none.
    pub allowed: Vec<String>,
    pub max_tokens: u32,
}

impl Default for ModelPolicy {
    fn default() -> Self {
        ModelPolicy {
            allowed: Vec::new(),
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

impl ModelPolicy {
    pub fn allows(&self, model_id: &str) -> bool {
        self.allowed.iter().any(|m| m == model_id)
    }

    /// The output tokens a call asks for: the agent's own setting under the cap, else the cap.
    pub fn max_tokens_for(&self, asked: Option<u32>) -> u32 {
        asked.map_or(self.max_tokens, |t| t.min(self.max_tokens))
    }
}

/// Everything that decides whether a tenant may use an agent's target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenancyPolicy {
    pub namespaces: Namespaces,
    pub models: ModelPolicy,
}

impl TenancyPolicy {
    /// Refuses an agent whose target reaches beyond the tenant's own: another tenant's secret,
    /// parameter or function, a key pasted instead of referenced, a model the operator did not
    /// allow, or more output tokens than the operator's cap. Errors name the field and never
    /// repeat the value.
    pub fn check_agent(&self, tenant: &str, agent: &Agent) -> Result<(), AgentError> {
        match &agent.target {
            AgentTarget::Http { .. } => Ok(()),
            AgentTarget::Lambda { function } => {
                if self.namespaces.owns_function(tenant, function) {
                    return Ok(());
                }
                let root = self.namespaces.function_root(tenant);
                let reason = if root.contains('.') {
                    format!(
                        "tenant ids with `.` cannot name Lambda functions (whose names have no \
                         `.`); the operator's pattern is `{}{{tenant}}-<name>`",
                        self.namespaces.function_prefix
                    )
                } else {
                    format!(
                        "must name one of this tenant's functions: `{root}<name>`, where <name> \
                         has letters, digits and _ (a name, partial ARN or ARN, with an \
                         optional :qualifier)"
                    )
                };
                Err(AgentError::Target {
                    field: "function".into(),
                    reason,
                })
            }
            AgentTarget::Openai(target) => match &target.api_key {
                None => Ok(()),
                Some(reference) => self.check_secret(tenant, reference).map(drop),
            },
            AgentTarget::Bedrock(target) => {
                if !self.models.allows(&target.model_id) {
                    let reason = if self.models.allowed.is_empty() {
                        "this deployment allows no Bedrock models (the operator's BedrockModelIds \
                         is empty)"
                            .to_string()
                    } else {
                        format!(
                            "is not one of the models this deployment allows: {}",
                            self.models.allowed.join(", ")
                        )
                    };
                    return Err(AgentError::Target {
                        field: "model_id".into(),
                        reason,
                    });
                }
                let asked = target.inference.as_ref().and_then(|i| i.max_tokens);
                if asked.is_some_and(|t| t > self.models.max_tokens) {
                    return Err(AgentError::Target {
                        field: "inference.max_tokens".into(),
                        reason: format!(
                            "is at most {} on this deployment (the operator's BedrockMaxTokens)",
                            self.models.max_tokens
                        ),
                    });
                }
                Ok(())
            }
        }
    }

    /// Where an `api_key` reference points, if it is well formed and the tenant's own.
    pub fn check_secret<'a>(
        &self,
        tenant: &str,
        reference: &'a str,
    ) -> Result<SecretSource<'a>, AgentError> {
        let source = super::agent::secret_source(reference)?;
        if self.namespaces.owns_secret(tenant, &source) {
            return Ok(source);
        }
        Err(AgentError::Target {
            field: "api_key".into(),
            reason: format!(
                "must reference a secret of this tenant, never hold a key: a Secrets Manager \
                 secret `{}<name>` (PUT /v1/secrets/<name> stores one) or its ARN, or an SSM \
                 parameter `{}<name>` or its ARN; the value given is not repeated here",
                self.namespaces.secret_root(tenant),
                self.namespaces.parameter_root(tenant)
            ),
        })
    }
}

/// A failure's text without the operator's AWS identifiers: ARNs (which name the account,
/// roles and resources) and 12-digit account ids become `[arn]` and `[account]`. Stored task
/// failures keep the service's error code and status, which is what a tenant can act on.
pub fn redact_aws_identifiers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("arn:") {
            let end = after
                .find(|c: char| {
                    c.is_whitespace()
                        || matches!(
                            c,
                            '"' | '\'' | '`' | ',' | ';' | ')' | '(' | '<' | '>' | '[' | ']'
                        )
                })
                .unwrap_or(after.len());
            out.push_str("[arn]");
            rest = &after[end..];
            continue;
        }
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let boundary_before = out
            .chars()
            .last()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        if digits > 0 {
            let boundary_after = rest[digits..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            if digits == 12 && boundary_before && boundary_after {
                out.push_str("[account]");
            } else {
                out.push_str(&rest[..digits]);
            }
            rest = &rest[digits..];
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentRegistration;
    use serde_json::json;

    fn agent(body: serde_json::Value) -> Agent {
        let mut registration = json!({"name": "a", "capabilities": ["x"]});
        registration
            .as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        serde_json::from_value::<AgentRegistration>(registration)
            .unwrap()
            .into_agent(0)
            .unwrap()
    }

    fn openai(api_key: &str) -> Agent {
        agent(
            json!({"kind": "openai", "base_url": "https://a/v1", "model": "m", "api_key": api_key}),
        )
    }

    #[test]
    fn secrets_and_parameters_must_be_in_the_tenants_namespace() {
        let policy = TenancyPolicy::default();
        for own in [
            "baton/acme/openai",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:baton/acme/openai-AbCdEf",
            "/baton/acme/openai",
            "/baton/acme/team/openai",
            "arn:aws:ssm:us-east-1:123456789012:parameter/baton/acme/openai",
        ] {
            assert!(policy.check_agent("acme", &openai(own)).is_ok(), "{own}");
        }
        for foreign in [
            "baton/globex/openai",
            "baton/acme2/openai",
            "baton/acme",
            "baton/acme/",
            "baton/acme/../globex/openai",
            "baton/acme//x",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:baton/globex/openai-AbCdEf",
            "/baton/globex/openai",
            "/baton/openai",
            "arn:aws:ssm:us-east-1:123456789012:parameter/baton/globex/openai",
            "/other/acme/openai",
            "openai_key",
        ] {
            let err = policy.check_agent("acme", &openai(foreign)).unwrap_err();
            assert_eq!(err.field(), "api_key", "{foreign}");
            // The message names the tenant's own namespace, which may begin like the value.
            let echoed = err.to_string().contains(foreign)
                && !policy.namespaces.secret_root("acme").starts_with(foreign);
            assert!(!echoed, "{foreign} echoed: {err}");
        }
    }

    #[test]
    fn a_pasted_key_is_refused_without_being_repeated() {
        let key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789";
        let registration: AgentRegistration = serde_json::from_value(json!({
            "name": "a", "capabilities": ["x"], "kind": "openai",
            "base_url": "https://a/v1", "model": "m", "api_key": key,
        }))
        .unwrap();
        let err = match registration.into_agent(0) {
            Err(err) => err,
            Ok(agent) => TenancyPolicy::default()
                .check_agent("acme", &agent)
                .unwrap_err(),
        };
        assert_eq!(err.field(), "api_key");
        assert!(!err.to_string().contains("sk-proj"), "{err}");
    }

    #[test]
    fn functions_must_carry_the_tenant_and_a_name_without_dashes() {
        let policy = TenancyPolicy::default();
        let lambda = |function: &str| agent(json!({"kind": "lambda", "function": function}));
        for own in [
            "baton-agent-acme-summarize",
            "baton-agent-acme-summarize:live",
            "baton-agent-a-b-x",
            "123456789012:function:baton-agent-acme-sum_v2",
            "arn:aws:lambda:eu-west-1:123456789012:function:baton-agent-acme-summarize:3",
        ] {
            let tenant = if own.contains("-a-b-") { "a-b" } else { "acme" };
            assert!(policy.check_agent(tenant, &lambda(own)).is_ok(), "{own}");
        }
        for (tenant, foreign) in [
            ("acme", "baton-agent-globex-summarize"),
            ("acme", "baton-agent-acme-"),
            ("acme", "baton-agent-summarize"),
            ("acme", "summarize"),
            // Tenant `a` must not reach tenant `a-b`'s function.
            ("a", "baton-agent-a-b-x"),
            (
                "acme",
                "arn:aws:lambda:eu-west-1:123456789012:function:baton-agent-globex-x",
            ),
        ] {
            let err = policy.check_agent(tenant, &lambda(foreign)).unwrap_err();
            assert_eq!(err.field(), "function", "{tenant} {foreign}");
        }
        let err = policy
            .check_agent("acme.eu", &lambda("baton-agent-acme-x"))
            .unwrap_err();
        assert!(err.to_string().contains("`.`"), "{err}");
    }

    #[test]
    fn models_come_from_the_allow_list_under_the_token_cap() {
        let bedrock = |inference: serde_json::Value| {
            agent(json!({"kind": "bedrock", "model_id": "m1", "inference": inference}))
        };
        let closed = TenancyPolicy::default();
        let err = closed.check_agent("acme", &bedrock(json!({}))).unwrap_err();
        assert_eq!(err.field(), "model_id");
        let open = TenancyPolicy {
            models: ModelPolicy {
                allowed: vec!["m1".into()],
                max_tokens: 100,
            },
            ..TenancyPolicy::default()
        };
        assert!(open
            .check_agent("acme", &bedrock(json!({"max_tokens": 100})))
            .is_ok());
        let err = open
            .check_agent("acme", &bedrock(json!({"max_tokens": 101})))
            .unwrap_err();
        assert_eq!(err.field(), "inference.max_tokens");
        assert_eq!(open.models.max_tokens_for(None), 100);
        assert_eq!(open.models.max_tokens_for(Some(7)), 7);
    }

    #[test]
    fn account_ids_and_arns_are_redacted_and_codes_kept() {
        let text = "Lambda answered AccessDeniedException (HTTP 403) for function `f`: User: \
                    arn:aws:sts::123456789012:assumed-role/baton-Execute/fn is not authorized \
                    on arn:aws:lambda:us-east-1:123456789012:function:x; account 123456789012.";
        let redacted = redact_aws_identifiers(text);
        assert!(!redacted.contains("123456789012"), "{redacted}");
        assert!(!redacted.contains("assumed-role"), "{redacted}");
        assert!(
            redacted.contains("AccessDeniedException (HTTP 403)"),
            "{redacted}"
        );
        assert!(
            redacted.contains("[arn] is not authorized on [arn];"),
            "{redacted}"
        );
        assert!(redacted.ends_with("account [account]."), "{redacted}");
        // Other numbers stay.
        assert_eq!(
            redact_aws_identifiers("took 1234567890123 ms"),
            "took 1234567890123 ms"
        );
    }
}
