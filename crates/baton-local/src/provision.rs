//! Creates the template's tables, queues, buckets and secrets in the emulator, under a name
//! prefix so that several stacks (one per test) can share one emulator.
//!
//! What already exists is kept: a stack restarted against the same emulator (after a crash,
//! or on LocalStack that outlives it) picks up its tables, queues, secrets and their contents.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::template::{Resolve, SecretSpec, TableSpec, Template};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("creating {resource}: {message}")]
    Create { resource: String, message: String },
}

/// Physical names of what was created, by logical id.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    pub tables: BTreeMap<String, String>,
    /// logical id → (queue URL, queue ARN)
    pub queues: BTreeMap<String, (String, String)>,
    /// logical id → bucket name
    pub buckets: BTreeMap<String, String>,
    /// logical id → secret ARN
    pub secrets: BTreeMap<String, String>,
}

impl Resolve for Provisioned {
    /// `!Ref` of a table is its name, of a queue its URL and of a secret its ARN, as in
    /// CloudFormation.
    fn reference(&self, logical_id: &str) -> Option<String> {
        self.tables
            .get(logical_id)
            .cloned()
            .or_else(|| self.queues.get(logical_id).map(|(url, _)| url.clone()))
            .or_else(|| self.buckets.get(logical_id).cloned())
            .or_else(|| self.secrets.get(logical_id).cloned())
    }
}

/// The clients provisioning creates the template's resources with.
#[derive(Debug, Clone, Copy)]
pub struct ProvisionClients<'a> {
    pub dynamodb: &'a aws_sdk_dynamodb::Client,
    pub sqs: &'a aws_sdk_sqs::Client,
    pub s3: &'a aws_sdk_s3::Client,
    pub secrets: &'a aws_sdk_secretsmanager::Client,
}

/// An S3 client for an emulator, which serves buckets by path rather than by host name.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// A bucket's name for `prefix` and its logical id: lower case, at most 63 characters, as S3
/// wants.
pub fn bucket_name(prefix: &str, id: &str) -> String {
    let name: String = format!("{prefix}-{id}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    name.trim_end_matches('-').to_string()
}

pub async fn provision(
    template: &Template,
    prefix: &str,
    clients: ProvisionClients<'_>,
) -> Result<Provisioned, ProvisionError> {
    let ProvisionClients {
        dynamodb,
        sqs,
        s3,
        secrets,
    } = clients;
    let mut provisioned = Provisioned::default();
    for id in &template.buckets {
        let name = bucket_name(prefix, id);
        match s3.create_bucket().bucket(&name).send().await {
            Ok(_) => {}
            // Kept from an earlier run against the same emulator: used as it is.
            Err(e)
                if e.as_service_error().is_some_and(|e| {
                    e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
                }) => {}
            Err(e) => {
                return Err(ProvisionError::Create {
                    resource: id.clone(),
                    message: display(&e),
                })
            }
        }
        provisioned.buckets.insert(id.clone(), name);
    }
    for (id, spec) in &template.secrets {
        let arn = create_secret(secrets, &format!("{prefix}-{id}"), spec)
            .await
            .map_err(|message| ProvisionError::Create {
                resource: id.clone(),
                message,
            })?;
        provisioned.secrets.insert(id.clone(), arn);
    }
    for (id, spec) in &template.tables {
        let name = format!("{prefix}-{id}");
        create_table(dynamodb, &name, spec)
            .await
            .map_err(|message| ProvisionError::Create {
                resource: id.clone(),
                message,
            })?;
        provisioned.tables.insert(id.clone(), name);
    }
    // Dead-letter queues first: the queues that redrive to them need their ARNs.
    let mut queues: Vec<_> = template.queues.iter().collect();
    queues.sort_by_key(|(_, spec)| spec.redrive.is_some());
    for (id, spec) in queues {
        let fail = |message: String| ProvisionError::Create {
            resource: id.clone(),
            message,
        };
        let mut request = sqs.create_queue().queue_name(format!("{prefix}-{id}"));
        if let Some(v) = spec.visibility_timeout_s {
            request = request.attributes(QueueAttributeName::VisibilityTimeout, v.to_string());
        }
        if let Some(v) = spec.retention_s {
            request = request.attributes(QueueAttributeName::MessageRetentionPeriod, v.to_string());
        }
        if let Some((dlq, max_receives)) = &spec.redrive {
            let (_, dlq_arn) = provisioned.queues.get(dlq).ok_or_else(|| {
                fail(format!(
                    "dead-letter queue {dlq} is not a queue of the template"
                ))
            })?;
            let policy = serde_json::json!({
                "deadLetterTargetArn": dlq_arn,
                "maxReceiveCount": max_receives,
            });
            request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let url = match request.send().await {
            Ok(out) => out.queue_url.unwrap_or_default(),
            // It may exist with other attributes (an older template): it is used as it is.
            Err(create) => match sqs
                .get_queue_url()
                .queue_name(format!("{prefix}-{id}"))
                .send()
                .await
            {
                Ok(out) => {
                    tracing::warn!(queue = %id, "queue exists with other attributes; kept as it is");
                    out.queue_url.unwrap_or_default()
                }
                Err(_) => return Err(fail(display(&create))),
            },
        };
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| fail(display(&e)))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .unwrap_or_default();
        provisioned.queues.insert(id.clone(), (url, arn));
    }
    Ok(provisioned)
}

/// Creates a secret with a value made up as `GenerateSecretString` asks, and answers its ARN.
/// A secret of that name from an earlier run is kept with its value: what was signed with it
/// still checks.
async fn create_secret(
    secrets: &aws_sdk_secretsmanager::Client,
    name: &str,
    spec: &SecretSpec,
) -> Result<String, String> {
    let created = secrets
        .create_secret()
        .name(name)
        .secret_string(generated_value(spec)?)
        .send()
        .await;
    match created {
        Ok(out) => out
            .arn
            .ok_or_else(|| "CreateSecret answered no ARN".to_string()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_exists_exception()) =>
        {
            secrets
                .describe_secret()
                .secret_id(name)
                .send()
                .await
                .map_err(|e| display(&e))?
                .arn
                .ok_or_else(|| "DescribeSecret answered no ARN".to_string())
        }
        Err(e) => Err(display(&e)),
    }
}

/// A secret's value: `spec.length` random letters and digits, alone or under the key of the
/// JSON object `SecretStringTemplate` names.
fn generated_value(spec: &SecretSpec) -> Result<String, String> {
    let password = random_alphanumeric(spec.length);
    let Some((object, key)) = &spec.json else {
        return Ok(password);
    };
    let mut value: serde_json::Value = serde_json::from_str(object)
        .map_err(|e| format!("SecretStringTemplate is not JSON: {e}"))?;
    let fields = value
        .as_object_mut()
        .ok_or("SecretStringTemplate is not a JSON object")?;
    fields.insert(key.clone(), password.into());
    Ok(value.to_string())
}

/// `length` letters and digits drawn uniformly from the operating system's random source
/// (through version-4 UUIDs).
fn random_alphanumeric(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // The largest multiple of the alphabet's size a byte holds: bytes from it up are dropped,
    // so that every character is as likely.
    const LIMIT: u8 = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut value = String::with_capacity(length);
    while value.len() < length {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        // Bytes 6 and 8 carry the UUID's version and variant bits; the other 14 are random.
        for (i, byte) in bytes.into_iter().enumerate() {
            if i != 6 && i != 8 && byte < LIMIT && value.len() < length {
                value.push(ALPHABET[usize::from(byte) % ALPHABET.len()] as char);
            }
        }
    }
    value
}

async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
    spec: &TableSpec,
) -> Result<(), String> {
    let key_schema =
        |keys: &[crate::template::KeyElement]| -> Result<Vec<KeySchemaElement>, String> {
            keys.iter()
                .map(|k| {
                    KeySchemaElement::builder()
                        .attribute_name(&k.attribute_name)
                        .key_type(KeyType::from(k.key_type.as_str()))
                        .build()
                        .map_err(|e| e.to_string())
                })
                .collect()
        };
    let request = dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&spec.key_schema)?))
        .set_attribute_definitions(Some(attribute_definitions(spec)?));
    let mut indexes = Vec::new();
    for index in &spec.global_secondary_indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(
                index.projection.projection_type.as_str(),
            ))
            .set_non_key_attributes(
                (!index.projection.non_key_attributes.is_empty())
                    .then(|| index.projection.non_key_attributes.clone()),
            )
            .build();
        indexes.push(
            GlobalSecondaryIndex::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(key_schema(&index.key_schema)?))
                .projection(projection)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    // DynamoDB refuses an empty list of indexes.
    match request
        .set_global_secondary_indexes((!indexes.is_empty()).then(|| indexes.clone()))
        .send()
        .await
    {
        Ok(_) => {}
        // A restart against an emulator that kept the table: it is used as it is, with the
        // indexes a newer template added.
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            return add_missing_indexes(dynamodb, name, spec, indexes).await;
        }
        Err(e) => return Err(display(&e)),
    }
    if let Some(ttl) = &spec.time_to_live_specification {
        dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(&ttl.attribute_name)
                    .enabled(ttl.enabled)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await
            .map_err(|e| display(&e))?;
    }
    Ok(())
}

fn attribute_definitions(spec: &TableSpec) -> Result<Vec<AttributeDefinition>, String> {
    spec.attribute_definitions
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Creates the template's indexes that an existing table lacks (one per UpdateTable, as
/// DynamoDB requires).
async fn add_missing_indexes(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
    spec: &TableSpec,
    indexes: Vec<GlobalSecondaryIndex>,
) -> Result<(), String> {
    let described = dynamodb
        .describe_table()
        .table_name(name)
        .send()
        .await
        .map_err(|e| display(&e))?;
    let existing: Vec<String> = described
        .table()
        .map(|table| {
            table
                .global_secondary_indexes()
                .iter()
                .filter_map(|i| i.index_name().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for index in indexes {
        if existing.iter().any(|e| e == index.index_name()) {
            continue;
        }
        tracing::info!(table = %name, index = %index.index_name(), "adding an index the template added");
        // Only the new index's keys: DynamoDB refuses definitions no key uses.
        let keys: Vec<&str> = index
            .key_schema()
            .iter()
            .map(|k| k.attribute_name())
            .collect();
        let definitions = attribute_definitions(spec)?
            .into_iter()
            .filter(|d| keys.contains(&d.attribute_name()))
            .collect();
        let update = dynamodb
            .update_table()
            .table_name(name)
            .set_attribute_definitions(Some(definitions));
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(index.index_name())
            .set_key_schema(Some(index.key_schema().to_vec()))
            .set_projection(index.projection().cloned())
            .build()
            .map_err(|e| e.to_string())?;
        update
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await
            .map_err(|e| display(&e))?;
    }
    Ok(())
}

fn display<E: std::error::Error + Send + Sync + 'static>(e: &E) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_asked_length_in_letters_and_digits() {
        for length in [1, 32, 64, 100] {
            let value = generated_value(&SecretSpec { length, json: None }).unwrap();
            assert_eq!(value.len(), length);
            assert!(value.bytes().all(|b| b.is_ascii_alphanumeric()), "{value}");
        }
        let spec = SecretSpec {
            length: 64,
            json: None,
        };
        assert_ne!(
            generated_value(&spec).unwrap(),
            generated_value(&spec).unwrap()
        );
        let json = SecretSpec {
            length: 16,
            json: Some((r#"{"user": "baton"}"#.into(), "password".into())),
        };
        let value: serde_json::Value =
            serde_json::from_str(&generated_value(&json).unwrap()).unwrap();
        assert_eq!(value["user"], "baton");
        assert_eq!(value["password"].as_str().map(str::len), Some(16));
        let not_an_object = SecretSpec {
            length: 16,
            json: Some(("[]".into(), "password".into())),
        };
        assert!(generated_value(&not_an_object).is_err());
    }

    #[test]
    fn a_secret_resolves_to_its_arn() {
        let mut provisioned = Provisioned::default();
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:p-StreamKeySecret-AbCdEf";
        provisioned
            .secrets
            .insert("StreamKeySecret".into(), arn.into());
        provisioned
            .tables
            .insert("StateTable".into(), "p-StateTable".into());
        assert_eq!(
            provisioned.reference("StreamKeySecret").as_deref(),
            Some(arn)
        );
        assert_eq!(
            provisioned.reference("StateTable").as_deref(),
            Some("p-StateTable")
        );
        assert_eq!(provisioned.reference("Missing"), None);
        // The functions' `!Ref StreamKeySecret` is the ARN.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let template = Template::load(&path).unwrap();
        for function in ["StreamFunction", "OrchestrateFunction"] {
            let value = &template.functions[function].environment["BATON_STREAM_KEY_SECRET"];
            assert_eq!(
                crate::template::resolve_value(&template, &provisioned, value).as_deref(),
                Some(arn),
                "{function}"
            );
        }
    }
}
