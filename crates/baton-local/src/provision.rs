//! Creates the template's tables and queues in the emulator, under a name prefix so that
//! several stacks (one per test) can share one emulator.
//!
//! What already exists is kept: a stack restarted against the same emulator (after a crash,
//! or on LocalStack that outlives it) picks up its tables, queues and their contents.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::template::{Resolve, TableSpec, Template};

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
}

impl Resolve for Provisioned {
    /// `!Ref` of a table is its name and of a queue its URL, as in CloudFormation.
    fn reference(&self, logical_id: &str) -> Option<String> {
        self.tables
            .get(logical_id)
            .cloned()
            .or_else(|| self.queues.get(logical_id).map(|(url, _)| url.clone()))
            .or_else(|| self.buckets.get(logical_id).cloned())
    }
}

/// The clients provisioning creates the template's resources with.
#[derive(Debug, Clone, Copy)]
pub struct ProvisionClients<'a> {
    pub dynamodb: &'a aws_sdk_dynamodb::Client,
    pub sqs: &'a aws_sdk_sqs::Client,
    pub s3: &'a aws_sdk_s3::Client,
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
    let ProvisionClients { dynamodb, sqs, s3 } = clients;
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
