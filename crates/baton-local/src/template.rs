//! Reads `template.yaml`: the tables, queues, buckets, secrets and functions the local stack
//! must stand up, so that local and cloud are described by one file and cannot drift.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;
use serde_yaml::Value;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read the template: {0}")]
    Read(#[from] std::io::Error),
    #[error("the template is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("resource {resource}: {message}")]
    Resource { resource: String, message: String },
}

/// The parts of the template the local stack uses.
#[derive(Debug, Clone)]
pub struct Template {
    pub tables: BTreeMap<String, TableSpec>,
    pub queues: BTreeMap<String, QueueSpec>,
    /// S3 buckets, by logical id (their properties are the deployment's: encryption, public
    /// access, expiry; a local bucket only holds objects).
    pub buckets: Vec<String>,
    /// Secrets Manager secrets whose value is generated, by logical id.
    pub secrets: BTreeMap<String, SecretSpec>,
    pub functions: BTreeMap<String, FunctionSpec>,
    /// Parameter defaults, for `!Ref Parameter`.
    pub parameters: BTreeMap<String, String>,
    /// The `CommaDelimitedList` parameters: `!Ref` of one is a list (its default split at
    /// commas), as `!Join` takes it.
    pub list_parameters: BTreeSet<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableSpec {
    pub attribute_definitions: Vec<AttributeDefinition>,
    pub key_schema: Vec<KeyElement>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<IndexSpec>,
    pub time_to_live_specification: Option<TtlSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDefinition {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyElement {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexSpec {
    pub index_name: String,
    pub key_schema: Vec<KeyElement>,
    pub projection: ProjectionSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectionSpec {
    pub projection_type: String,
    #[serde(default)]
    pub non_key_attributes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TtlSpec {
    pub attribute_name: String,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub visibility_timeout_s: Option<u32>,
    pub retention_s: Option<u32>,
    /// (logical id of the dead-letter queue, maxReceiveCount)
    pub redrive: Option<(String, u32)>,
}

/// An `AWS::SecretsManager::Secret` with `GenerateSecretString`: Secrets Manager makes up its
/// value when it creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// `PasswordLength` (Secrets Manager's default: 32).
    pub length: usize,
    /// `SecretStringTemplate` and `GenerateStringKey`: the value is that JSON object with the
    /// generated string under the key; without them, the generated string itself.
    pub json: Option<(String, String)>,
}

/// Secrets Manager's `PasswordLength` when a template names none.
const DEFAULT_SECRET_LENGTH: usize = 32;

#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The binary the function runs (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    pub environment: BTreeMap<String, Value>,
    pub events: Vec<EventSpec>,
}

/// A function's event source. `HttpApi`: the function serves the HTTP API, through a SAM
/// `HttpApi` event or an `AWS::ApiGatewayV2::Integration`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventSpec {
    /// `batching_window_s`: `MaximumBatchingWindowInSeconds`, how long the mapping gathers a
    /// batch before it invokes the function (0: at once).
    Sqs {
        queue: String,
        batch_size: u32,
        batching_window_s: u32,
    },
    HttpApi,
    Schedule {
        every_s: u64,
    },
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        Self::parse(&std::fs::read_to_string(path)?)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let doc: Value = serde_yaml::from_str(text)?;
        let parameters = doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), scalar(v.get("Default")?)?)))
            .collect();
        let list_parameters = doc
            .get("Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.get("Type").and_then(Value::as_str) == Some("CommaDelimitedList"))
            .filter_map(|(k, _)| Some(k.as_str()?.to_string()))
            .collect();
        let globals = doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .and_then(|f| f.get("Environment"))
            .and_then(|e| e.get("Variables"));
        let mut template = Template {
            tables: BTreeMap::new(),
            queues: BTreeMap::new(),
            buckets: Vec::new(),
            secrets: BTreeMap::new(),
            functions: BTreeMap::new(),
            parameters,
            list_parameters,
        };
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| TemplateError::Resource {
                resource: "Resources".into(),
                message: "missing".into(),
            })?;
        // Functions an `AWS::ApiGatewayV2::Integration` of the HTTP API invokes.
        let mut integrated = Vec::new();
        for (id, resource) in resources {
            let id = id.as_str().unwrap_or_default().to_string();
            let fail = |message: String| TemplateError::Resource {
                resource: id.clone(),
                message,
            };
            let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
            match resource.get("Type").and_then(Value::as_str) {
                Some("AWS::DynamoDB::Table") => {
                    let spec = serde_yaml::from_value(props).map_err(|e| fail(e.to_string()))?;
                    template.tables.insert(id, spec);
                }
                Some("AWS::S3::Bucket") => template.buckets.push(id),
                Some("AWS::SecretsManager::Secret") => {
                    let generate = props.get("GenerateSecretString").ok_or_else(|| {
                        fail("only secrets with GenerateSecretString are supported".into())
                    })?;
                    let length = match generate.get("PasswordLength") {
                        None => DEFAULT_SECRET_LENGTH,
                        Some(v) => scalar(v)
                            .and_then(|v| v.parse().ok())
                            .filter(|&n| n > 0)
                            .ok_or_else(|| {
                                fail("PasswordLength must be a positive number".into())
                            })?,
                    };
                    let text = |key: &str| generate.get(key).and_then(Value::as_str);
                    let json = match (text("SecretStringTemplate"), text("GenerateStringKey")) {
                        (None, None) => None,
                        (Some(object), Some(key)) => Some((object.to_string(), key.to_string())),
                        _ => {
                            return Err(fail(
                                "SecretStringTemplate and GenerateStringKey go together".into(),
                            ))
                        }
                    };
                    template.secrets.insert(id, SecretSpec { length, json });
                }
                Some("AWS::SQS::Queue") => {
                    let redrive = match props.get("RedrivePolicy") {
                        None => None,
                        Some(policy) => {
                            let target = policy
                                .get("deadLetterTargetArn")
                                .and_then(get_att_target)
                                .ok_or_else(|| {
                                    fail("deadLetterTargetArn must be !GetAtt X.Arn".into())
                                })?;
                            let max = policy
                                .get("maxReceiveCount")
                                .and_then(scalar)
                                .and_then(|v| v.parse().ok())
                                .ok_or_else(|| fail("maxReceiveCount missing".into()))?;
                            Some((target, max))
                        }
                    };
                    template.queues.insert(
                        id,
                        QueueSpec {
                            visibility_timeout_s: number(&props, "VisibilityTimeout"),
                            retention_s: number(&props, "MessageRetentionPeriod"),
                            redrive,
                        },
                    );
                }
                Some("AWS::Serverless::Function") => {
                    let binary = resource
                        .get("Metadata")
                        .and_then(|m| m.get("BuildProperties"))
                        .and_then(|b| b.get("Binary"))
                        .and_then(Value::as_str)
                        .ok_or_else(|| fail("Metadata.BuildProperties.Binary missing".into()))?
                        .to_string();
                    let mut environment = BTreeMap::new();
                    let own = props.get("Environment").and_then(|e| e.get("Variables"));
                    for variables in [globals, own].into_iter().flatten() {
                        for (k, v) in variables.as_mapping().into_iter().flatten() {
                            if let Some(k) = k.as_str() {
                                environment.insert(k.to_string(), v.clone());
                            }
                        }
                    }
                    let mut events = Vec::new();
                    for (_, event) in props
                        .get("Events")
                        .and_then(Value::as_mapping)
                        .into_iter()
                        .flatten()
                    {
                        let p = event.get("Properties").cloned().unwrap_or(Value::Null);
                        match event.get("Type").and_then(Value::as_str) {
                            Some("SQS") => events.push(EventSpec::Sqs {
                                queue: p.get("Queue").and_then(get_att_target).ok_or_else(
                                    || fail("SQS event Queue must be !GetAtt X.Arn".into()),
                                )?,
                                batch_size: number(&p, "BatchSize").unwrap_or(10),
                                batching_window_s: number(&p, "MaximumBatchingWindowInSeconds")
                                    .unwrap_or(0),
                            }),
                            Some("HttpApi") => events.push(EventSpec::HttpApi),
                            Some("Schedule") => {
                                let expression = p
                                    .get("Schedule")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default();
                                let every_s = parse_rate(expression).ok_or_else(|| {
                                    fail(format!("unsupported schedule `{expression}`"))
                                })?;
                                events.push(EventSpec::Schedule { every_s });
                            }
                            other => return Err(fail(format!("unsupported event type {other:?}"))),
                        }
                    }
                    template.functions.insert(
                        id,
                        FunctionSpec {
                            binary,
                            environment,
                            events,
                        },
                    );
                }
                Some("AWS::ApiGatewayV2::Integration") => {
                    integrated.extend(props.get("IntegrationUri").and_then(get_att_target));
                }
                _ => {}
            }
        }
        for function in integrated {
            if let Some(spec) = template.functions.get_mut(&function) {
                spec.events.push(EventSpec::HttpApi);
            }
        }
        Ok(template)
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(v: &Value, key: &str) -> Option<u32> {
    v.get(key).and_then(scalar).and_then(|s| s.parse().ok())
}

/// `!GetAtt X.Arn` → `X`.
fn get_att_target(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) if t.tag == "GetAtt" => {
            let target = t.value.as_str()?;
            Some(target.strip_suffix(".Arn")?.to_string())
        }
        _ => None,
    }
}

/// `rate(1 minute)`, `rate(5 minutes)`, `rate(1 hour)` → seconds.
fn parse_rate(expression: &str) -> Option<u64> {
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let (value, unit) = inner.trim().split_once(' ')?;
    let value: u64 = value.parse().ok()?;
    let unit_s = match unit.trim_end_matches('s') {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => return None,
    };
    Some(value * unit_s)
}

/// What `!Ref` and `!GetAtt` of a provisioned resource resolve to.
pub trait Resolve {
    fn reference(&self, logical_id: &str) -> Option<String>;
}

/// Resolves one environment value: a plain scalar, `!Ref` of a resource or parameter, or
/// `!Join [delimiter, values]` of those or of a `CommaDelimitedList` parameter.
pub fn resolve_value(
    template: &Template,
    resources: &impl Resolve,
    value: &Value,
) -> Option<String> {
    match value {
        Value::Tagged(t) if t.tag == "Ref" => {
            let id = t.value.as_str()?;
            resources
                .reference(id)
                .or_else(|| template.parameters.get(id).cloned())
        }
        Value::Tagged(t) if t.tag == "Join" => {
            let [delimiter, values] = t.value.as_sequence()?.as_slice() else {
                return None;
            };
            let values = resolve_list(template, resources, values)?;
            Some(values.join(delimiter.as_str()?))
        }
        other => scalar(other),
    }
}

/// A list `!Join` takes: a sequence of values, or `!Ref` of a `CommaDelimitedList` parameter
/// (whose default `""` is the one-item list `[""]`, as in CloudFormation).
fn resolve_list(
    template: &Template,
    resources: &impl Resolve,
    value: &Value,
) -> Option<Vec<String>> {
    match value {
        Value::Sequence(items) => items
            .iter()
            .map(|item| resolve_value(template, resources, item))
            .collect(),
        Value::Tagged(t) if t.tag == "Ref" => {
            let id = t.value.as_str()?;
            if !template.list_parameters.contains(id) {
                return None;
            }
            let joined = template.parameters.get(id)?;
            Some(joined.split(',').map(str::to_string).collect())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_template_describes_the_whole_chain() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let t = Template::load(&path).unwrap();
        assert!(t.tables.contains_key("StateTable"));
        assert!(t.tables["StateTable"]
            .global_secondary_indexes
            .iter()
            .any(|i| i.index_name == "leases"));
        assert_eq!(
            t.queues["ExecuteQueue"].redrive,
            Some(("ExecuteDeadLetterQueue".to_string(), 5))
        );
        let binaries: Vec<&str> = t.functions.values().map(|f| f.binary.as_str()).collect();
        for b in ["orchestrate", "route", "execute-agent", "learn", "cleanup"] {
            assert!(binaries.contains(&b), "{b}");
        }
        assert!(t.functions["CleanupFunction"]
            .events
            .contains(&EventSpec::Schedule { every_s: 60 }));
        assert!(t.functions["OrchestrateFunction"]
            .events
            .contains(&EventSpec::HttpApi));
        assert!(t.functions["RouteFunction"]
            .environment
            .contains_key("STATE_TABLE"));
        // The stream function: served by its function URL, so no event source.
        let stream = &t.functions["StreamFunction"];
        assert_eq!(stream.binary, "stream");
        assert!(stream.events.is_empty());
        for name in [
            "BATON_STREAM_KEY_SECRET",
            "BATON_STREAM_ORIGINS",
            "STATE_TABLE",
        ] {
            assert!(stream.environment.contains_key(name), "{name}");
        }
        for name in ["BATON_STREAM_KEY_SECRET", "BATON_STREAM_URL"] {
            assert!(
                t.functions["OrchestrateFunction"]
                    .environment
                    .contains_key(name),
                "{name}"
            );
        }
        assert_eq!(
            t.secrets["StreamKeySecret"],
            SecretSpec {
                length: 64,
                json: None
            }
        );
    }

    #[test]
    fn secrets_are_read_with_their_generation() {
        let t = Template::parse(
            r#"
Resources:
  Plain:
    Type: AWS::SecretsManager::Secret
    Properties:
      GenerateSecretString: {}
  Json:
    Type: AWS::SecretsManager::Secret
    Properties:
      GenerateSecretString:
        PasswordLength: 20
        SecretStringTemplate: '{"user": "baton"}'
        GenerateStringKey: password
  Quiet:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties: { Binary: quiet }
    Properties:
      FunctionUrlConfig: { AuthType: NONE, InvokeMode: RESPONSE_STREAM }
"#,
        )
        .unwrap();
        assert_eq!(
            t.secrets["Plain"],
            SecretSpec {
                length: 32,
                json: None
            }
        );
        assert_eq!(
            t.secrets["Json"],
            SecretSpec {
                length: 20,
                json: Some((r#"{"user": "baton"}"#.into(), "password".into()))
            }
        );
        assert!(t.functions["Quiet"].events.is_empty());
        for bad in [
            "Properties: { SecretString: fixed }",
            "Properties: { GenerateSecretString: { PasswordLength: 0 } }",
            "Properties: { GenerateSecretString: { GenerateStringKey: password } }",
        ] {
            let text =
                format!("Resources:\n  S:\n    Type: AWS::SecretsManager::Secret\n    {bad}\n");
            assert!(
                matches!(Template::parse(&text), Err(TemplateError::Resource { .. })),
                "{bad}"
            );
        }
    }

    /// Nothing provisioned: `!Ref` falls back to parameter defaults.
    struct Nothing;
    impl Resolve for Nothing {
        fn reference(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn joins_of_lists_and_values_resolve_like_cloudformation() {
        let t = Template::parse(
            r#"
Parameters:
  Empty: { Type: CommaDelimitedList, Default: "" }
  Models: { Type: CommaDelimitedList, Default: "m1,m2" }
  Hosts: { Type: String, Default: "a,b" }
  Tokens: { Type: Number, Default: 4096 }
Resources: {}
"#,
        )
        .unwrap();
        let resolve =
            |yaml: &str| resolve_value(&t, &Nothing, &serde_yaml::from_str(yaml).unwrap());
        assert_eq!(resolve(r#"!Join [",", !Ref Empty]"#).as_deref(), Some(""));
        assert_eq!(
            resolve(r#"!Join [",", !Ref Models]"#).as_deref(),
            Some("m1,m2")
        );
        assert_eq!(
            resolve(r#"!Join ["|", !Ref Models]"#).as_deref(),
            Some("m1|m2")
        );
        assert_eq!(
            resolve(r#"!Join ["-", [x, !Ref Tokens, !Join [":", !Ref Models]]]"#).as_deref(),
            Some("x-4096-m1:m2")
        );
        assert_eq!(resolve("!Ref Tokens").as_deref(), Some("4096"));
        // A String parameter is one value, not a list, whatever commas it holds.
        assert_eq!(resolve(r#"!Join [",", !Ref Hosts]"#), None);
        assert_eq!(
            resolve(r#"!Join [",", [!Ref Hosts]]"#).as_deref(),
            Some("a,b")
        );
        assert_eq!(resolve(r#"!Join [",", !Ref Missing]"#), None);
    }

    #[test]
    fn the_project_template_resolves_the_tenancy_settings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let t = Template::load(&path).unwrap();
        let env = |function: &str, name: &str| {
            let value = t.functions[function].environment.get(name)?;
            resolve_value(&t, &Nothing, value)
        };
        for function in t.functions.keys() {
            assert_eq!(env(function, "BATON_BEDROCK_MODELS").as_deref(), Some(""));
            assert_eq!(
                env(function, "BATON_BEDROCK_MAX_TOKENS").as_deref(),
                Some("4096")
            );
            assert_eq!(
                env(function, "BATON_SECRET_PREFIX").as_deref(),
                Some("baton/")
            );
            assert_eq!(
                env(function, "BATON_FUNCTION_PREFIX").as_deref(),
                Some("baton-agent-")
            );
            assert_eq!(
                env(function, "BATON_QUOTA_TASK_BACKLOG").as_deref(),
                Some("20000")
            );
        }
        assert_eq!(
            env("OrchestrateFunction", "BATON_OPERATOR_SCOPE").as_deref(),
            Some("baton/operator")
        );
        // No browser origin by default.
        assert_eq!(
            env("StreamFunction", "BATON_STREAM_ORIGINS").as_deref(),
            Some("")
        );
        let running = t.tables["StateTable"]
            .global_secondary_indexes
            .iter()
            .find(|i| i.index_name == "running")
            .expect("running index");
        assert_eq!(running.projection.projection_type, "KEYS_ONLY");
    }

    #[test]
    fn rates_are_read_in_seconds() {
        assert_eq!(parse_rate("rate(1 minute)"), Some(60));
        assert_eq!(parse_rate("rate(5 minutes)"), Some(300));
        assert_eq!(parse_rate("cron(0 * * * ? *)"), None);
    }
}
