//! The agent registry, and the health the scheduled probes record on each agent.

use async_trait::async_trait;
use baton_types::ids::{AgentName, TenantId};

use super::*;
use crate::dynamo::keys::{HEALTH_SWEEP, SWEEP_AT, SWEEP_SHARD};
use aws_sdk_dynamodb::types::{Delete, Update};
use baton_types::agent::{AgentTarget, BedrockTarget, OpenAiTarget};
use baton_types::health::{fair_by_tenant, DUE_READ_FACTOR};
use baton_types::registry::UnreadableAgent;

/// The target's attributes: `kind` and the kind's own fields. An openai agent's `api_key` is
/// the reference to the secret, never the key.
fn target_attributes(
    target: &AgentTarget,
) -> Result<Vec<(&'static str, AttributeValue)>, StoreError> {
    let mut attributes = vec![("kind", s(target.kind().as_str()))];
    match target {
        AgentTarget::Http { endpoint } => attributes.push(("endpoint", s(endpoint.as_str()))),
        AgentTarget::Lambda { function } => attributes.push(("function", s(function.as_str()))),
        AgentTarget::Openai(openai) => {
            attributes.push(("base_url", s(openai.base_url.as_str())));
            attributes.push(("model", s(openai.model.as_str())));
            if let Some(prompt) = &openai.system_prompt {
                attributes.push(("system_prompt", s(prompt.as_str())));
            }
            if let Some(parameters) = &openai.parameters {
                attributes.push(("parameters", json(parameters)?));
            }
            if let Some(reference) = &openai.api_key {
                attributes.push(("api_key", s(reference.as_str())));
            }
        }
        AgentTarget::Bedrock(bedrock) => {
            attributes.push(("model_id", s(bedrock.model_id.as_str())));
            if let Some(prompt) = &bedrock.system_prompt {
                attributes.push(("system_prompt", s(prompt.as_str())));
            }
            if let Some(inference) = &bedrock.inference {
                attributes.push(("inference", json(inference)?));
            }
        }
    }
    Ok(attributes)
}

fn target_record(a: &Attrs<'_>) -> Result<AgentTarget, StoreError> {
    let opt = |name: &str| a.opt_s(name).map(str::to_string);
    Ok(match a.s("kind")? {
        "http" => AgentTarget::Http {
            endpoint: a.s("endpoint")?.into(),
        },
        "lambda" => AgentTarget::Lambda {
            function: a.s("function")?.into(),
        },
        "openai" => AgentTarget::Openai(OpenAiTarget {
            base_url: a.s("base_url")?.into(),
            model: a.s("model")?.into(),
            system_prompt: opt("system_prompt"),
            parameters: a.json("parameters")?,
            api_key: opt("api_key"),
        }),
        "bedrock" => AgentTarget::Bedrock(BedrockTarget {
            model_id: a.s("model_id")?.into(),
            system_prompt: opt("system_prompt"),
            inference: a.json("inference")?,
        }),
        other => return Err(StoreError::Corrupt(format!("unknown agent kind `{other}`"))),
    })
}

fn agent_item(tenant: &TenantId, agent: &Agent) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        (PK.into(), s(keys::agents_pk(tenant))),
        (SK.into(), s(keys::agent_sk(&agent.name))),
        ("name".into(), s(agent.name.as_str())),
        ("capabilities".into(), string_list(&agent.capabilities)),
        ("timeout_ms".into(), n(agent.timeout_ms)),
        ("enabled".into(), AttributeValue::Bool(agent.enabled)),
        (VERSION.into(), n(agent.version)),
        ("created_at".into(), n(agent.created_at_ms)),
        ("updated_at".into(), n(agent.updated_at_ms)),
    ]);
    item.extend(
        target_attributes(&agent.target)?
            .into_iter()
            .map(|(name, value)| (name.to_string(), value)),
    );
    if let Some(retry) = &agent.retry {
        item.insert("retry".into(), json(retry)?);
    }
    if let Some(breaker) = &agent.circuit_breaker {
        item.insert("circuit_breaker".into(), json(breaker)?);
    }
    if let Some(health) = &agent.health {
        item.insert("health".into(), json(health)?);
    }
    if let Some(weight) = agent.weight {
        item.insert("weight".into(), decimal(weight));
    }
    if let Some(max) = agent.max_concurrency {
        item.insert("max_concurrency".into(), n(max));
    }
    if !agent.resources.is_empty() {
        item.insert("resources".into(), json(&agent.resources)?);
    }
    if !agent.keywords.is_empty() {
        item.insert("keywords".into(), string_list(&agent.keywords));
    }
    if !agent.task_types.is_empty() {
        item.insert("task_types".into(), string_list(&agent.task_types));
    }
    if let Some(conversation) = &agent.conversation {
        item.insert("conversation".into(), json(conversation)?);
    }
    // `requires` keeps the attribute of its old name, `depends_on`: stored agents read as before.
    if !agent.requires.is_empty() {
        item.insert("depends_on".into(), string_list(&agent.requires));
    }
    if let Some(category) = &agent.category {
        item.insert("category".into(), s(category.as_str()));
    }
    if let Some(description) = &agent.description {
        item.insert("description".into(), s(description.as_str()));
    }
    if let Some(check) = &agent.health_check {
        item.insert("health_check".into(), json(check)?);
        // An enabled agent is in the sweeps index, due at once: the first probe comes with
        // the next sweep (so does the first after an enable). A disabled one is not probed
        // and stays out of the index, where it would only take a due check's place.
        if agent.enabled {
            item.insert(SWEEP_SHARD.into(), s(HEALTH_SWEEP));
            item.insert(SWEEP_AT.into(), n(agent.updated_at_ms));
        }
    }
    Ok(item)
}

fn agent_record(item: &Item) -> Result<Agent, StoreError> {
    let a = Attrs(item);
    Ok(Agent {
        name: stored_id(a.s("name")?)?,
        target: target_record(&a)?,
        capabilities: a.list("capabilities"),
        timeout_ms: a.n("timeout_ms")?,
        enabled: a.bool("enabled").unwrap_or(true),
        retry: a.json("retry")?,
        health_check: a.json("health_check")?,
        circuit_breaker: a.json("circuit_breaker")?,
        weight: a.opt_n("weight")?,
        max_concurrency: a.opt_n("max_concurrency")?,
        resources: a.json("resources")?.unwrap_or_default(),
        keywords: a.list("keywords"),
        task_types: a.list("task_types"),
        conversation: a.json("conversation")?,
        requires: a.list("depends_on"),
        category: a.opt_s("category").map(String::from),
        description: a.opt_s("description").map(String::from),
        health: a.json("health")?,
        // Items written before versions were kept are at their first.
        version: a.opt_n("version")?.unwrap_or(1),
        created_at_ms: a.n("created_at")?,
        updated_at_ms: a.n("updated_at")?,
    })
}

/// Where the health sweep probes the agent, if it can.
fn probe_url(agent: &Agent) -> Option<String> {
    let check = agent.health_check.as_ref()?;
    check.url(agent.endpoint()?)
}

/// The agent's version: what `If-Match` names.
const VERSION: &str = "version";
/// Raised whenever an agent that needs this one is stored enabled.
const GUARD: &str = "guard";
/// The request that last changed the item, so that a retry recognises its own write.
const CHANGE_ID: &str = "change_id";

/// The agents among `items`, with their guards; an unreadable item is logged, listed and
/// left out, so that one bad item never takes a tenant's whole registry down.
fn agent_list(items: &[Item]) -> AgentList {
    let mut list = AgentList::default();
    for item in items {
        let a = Attrs(item);
        match agent_record(item) {
            Ok(agent) => {
                if let Ok(Some(guard)) = a.opt_n::<u64>(GUARD) {
                    list.guards.insert(agent.name.to_string(), guard);
                }
                list.agents.push(agent);
            }
            Err(error) => {
                let key = a.opt_s("name").or_else(|| a.opt_s(SK)).unwrap_or("?");
                tracing::error!(item = key, %error, "unreadable agent item skipped");
                list.unreadable.push(UnreadableAgent {
                    name: key.to_string(),
                    reason: error.to_string(),
                });
            }
        }
    }
    list
}

/// An agent without what only its call needs (its prompt, parameters, inference settings) or
/// people read (its description): what routing and planning keep of a whole registry, so a
/// process's memory follows the number of agents, not the size of their prompts.
static ROUTING_VIEW: Projection = Projection {
    expression: "#pk, #sk, #name, #kind, #endpoint, #function, #base_url, #model, #api_key, \
                 #model_id, #capabilities, #timeout_ms, #enabled, #version, #created_at, \
                 #updated_at, #retry, #circuit_breaker, #health, #weight, #max_concurrency, \
                 #resources, #keywords, #task_types, #conversation, #depends_on, #category, \
                 #health_check, #guard",
    names: &[
        ("#pk", PK),
        ("#sk", SK),
        ("#name", "name"),
        ("#kind", "kind"),
        ("#endpoint", "endpoint"),
        ("#function", "function"),
        ("#base_url", "base_url"),
        ("#model", "model"),
        ("#api_key", "api_key"),
        ("#model_id", "model_id"),
        ("#capabilities", "capabilities"),
        ("#timeout_ms", "timeout_ms"),
        ("#enabled", "enabled"),
        ("#version", VERSION),
        ("#created_at", "created_at"),
        ("#updated_at", "updated_at"),
        ("#retry", "retry"),
        ("#circuit_breaker", "circuit_breaker"),
        ("#health", "health"),
        ("#weight", "weight"),
        ("#max_concurrency", "max_concurrency"),
        ("#resources", "resources"),
        ("#keywords", "keywords"),
        ("#task_types", "task_types"),
        ("#conversation", "conversation"),
        ("#depends_on", "depends_on"),
        ("#category", "category"),
        ("#health_check", "health_check"),
        ("#guard", GUARD),
    ],
};

fn readable_agents(items: &[Item]) -> Vec<Agent> {
    agent_list(items).agents
}

impl DynamoStore {
    /// The transaction of one registry change: the agent's own write, conditioned on what the
    /// change was decided on, and a raised guard on each agent it needs.
    fn change_items(
        &self,
        tenant: &TenantId,
        change: &AgentChange<'_>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let key = |name: &str| {
            HashMap::from([
                (PK.to_string(), s(keys::agents_pk(tenant))),
                (SK.to_string(), s(keys::agent_sk(name))),
            ])
        };
        let mut values = HashMap::new();
        let mut conditions = Vec::new();
        match change.expected_version {
            None => conditions.push("attribute_not_exists(pk)".to_string()),
            Some(version) => {
                conditions.push(format!("{VERSION} = :version"));
                values.insert(":version".to_string(), n(version));
            }
        }
        match change.expected_guard {
            Some(0) => conditions.push(format!("attribute_not_exists({GUARD})")),
            Some(guard) => {
                conditions.push(format!("{GUARD} = :guard"));
                values.insert(":guard".to_string(), n(guard));
            }
            None => {}
        }
        let condition = conditions.join(" AND ");
        let values = (!values.is_empty()).then_some(values);
        let own = match change.agent {
            Some(agent) => {
                let mut item = agent_item(tenant, agent)?;
                item.insert(CHANGE_ID.into(), s(change.change_id));
                let put = built(
                    Put::builder()
                        .table_name(&self.state_table)
                        .set_item(Some(item))
                        .condition_expression(condition)
                        .set_expression_attribute_values(values)
                        .build(),
                )?;
                TransactWriteItem::builder().put(put).build()
            }
            None => {
                let delete = built(
                    Delete::builder()
                        .table_name(&self.state_table)
                        .set_key(Some(key(change.name)))
                        .condition_expression(condition)
                        .set_expression_attribute_values(values)
                        .build(),
                )?;
                TransactWriteItem::builder().delete(delete).build()
            }
        };
        let mut items = vec![own];
        if let Some(count) = change.count {
            let update = Update::builder()
                .table_name(&self.state_table)
                .key(PK, s(keys::config_pk(tenant)))
                .key(SK, s(keys::AGENT_COUNT_SK))
                .update_expression(format!(
                    "SET {AGENTS} = if_not_exists({AGENTS}, :registered) + :delta"
                ))
                .expression_attribute_values(":registered", n(count.registered))
                .expression_attribute_values(":delta", n(count.delta));
            let update = if count.delta > 0 {
                update
                    .condition_expression(format!(
                        "attribute_not_exists({AGENTS}) OR {AGENTS} < :limit"
                    ))
                    .expression_attribute_values(":limit", n(count.limit))
            } else {
                update
            };
            items.push(
                TransactWriteItem::builder()
                    .update(built(update.build())?)
                    .build(),
            );
        }
        for need in &change.needs {
            let raise = built(
                Update::builder()
                    .table_name(&self.state_table)
                    .set_key(Some(key(need)))
                    .update_expression(format!(
                        "SET {GUARD} = if_not_exists({GUARD}, :zero) + :one"
                    ))
                    .condition_expression("enabled = :enabled")
                    .expression_attribute_values(":zero", n(0))
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":enabled", AttributeValue::Bool(true))
                    .build(),
            )?;
            items.push(TransactWriteItem::builder().update(raise).build());
        }
        Ok(items)
    }

    /// Takes an agent the health sweep cannot probe out of the sweeps index, unless it
    /// changed since `item` was read (a change writes its place in the index anew).
    async fn leave_health_sweep(&self, item: &Item) -> Result<(), StoreError> {
        let (Some(pk), Some(sk)) = (item.get(PK), item.get(SK)) else {
            return Ok(());
        };
        let update = self
            .client
            .update_item()
            .table_name(&self.state_table)
            .key(PK, pk.clone())
            .key(SK, sk.clone())
            .update_expression(format!("REMOVE {SWEEP_SHARD}, {SWEEP_AT}"));
        let update = match item.get(VERSION) {
            Some(version) => update
                .condition_expression(format!("{VERSION} = :version"))
                .expression_attribute_values(":version", version.clone()),
            None => update.condition_expression(format!(
                "attribute_exists({PK}) AND attribute_not_exists({VERSION})"
            )),
        };
        conditional_update(update, ReturnValue::None).await?;
        tracing::info!(
            agent = Attrs(item).opt_s("name").unwrap_or("?"),
            "agent the health sweep cannot probe taken out of the sweeps index"
        );
        Ok(())
    }

    /// An agent's item as stored, read strongly: the registry decides changes on it.
    async fn agent_item_raw(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<Item>, StoreError> {
        self.state_item(keys::agents_pk(tenant), &keys::agent_sk(name))
            .await
    }
}

/// The count of agents on the tenant's `AGENT_COUNT` item.
const AGENTS: &str = "agents";

#[async_trait]
impl AgentRegistry for DynamoStore {
    async fn agent_count(&self, tenant: &TenantId) -> Result<Option<u64>, StoreError> {
        let item = self
            .state_item(keys::config_pk(tenant), keys::AGENT_COUNT_SK)
            .await?;
        item.as_ref()
            .map_or(Ok(None), |item| Attrs(item).opt_n(AGENTS))
    }

    async fn replace_agent(&self, tenant: &TenantId, agent: &Agent) -> Result<(), StoreError> {
        self.put(&self.state_table, agent_item(tenant, agent)?)
            .await
    }

    async fn agent_list(&self, tenant: &TenantId) -> Result<AgentList, StoreError> {
        Ok(agent_list(
            &self
                .partition_read(
                    keys::agents_pk(tenant),
                    PartitionRead {
                        consistent: true,
                        ..PartitionRead::default()
                    },
                )
                .await?,
        ))
    }

    async fn change_agent(
        &self,
        tenant: &TenantId,
        change: &AgentChange<'_>,
    ) -> Result<bool, StoreError> {
        if self.transact(self.change_items(tenant, change)?).await? {
            return Ok(true);
        }
        // Cancelled: by a premise that moved, or by this same write applied once already
        // (its response lost and the request sent again).
        let now = self.agent_item_raw(tenant, change.name).await?;
        let ours = match (&now, change.agent) {
            (Some(item), Some(_)) => Attrs(item).opt_s(CHANGE_ID) == Some(change.change_id),
            (None, None) => true,
            _ => false,
        };
        Ok(ours)
    }

    async fn agents(&self, tenant: &TenantId) -> Result<Vec<Agent>, StoreError> {
        Ok(readable_agents(
            &self.partition(keys::agents_pk(tenant)).await?,
        ))
    }

    async fn routing_agents(&self, tenant: &TenantId) -> Result<Vec<Agent>, StoreError> {
        let read = PartitionRead {
            projection: Some(&ROUTING_VIEW),
            ..PartitionRead::default()
        };
        Ok(readable_agents(
            &self.partition_read(keys::agents_pk(tenant), read).await?,
        ))
    }

    async fn agent(
        &self,
        tenant: &TenantId,
        name: &AgentName,
    ) -> Result<Option<Agent>, StoreError> {
        self.agent_item_raw(tenant, name)
            .await?
            .as_ref()
            .map(agent_record)
            .transpose()
    }

    async fn due_health_checks(
        &self,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(TenantId, Agent)>, StoreError> {
        let wanted = usize::try_from(limit).unwrap_or(0);
        // More than the limit, keys only, so the probes can be shared among tenants.
        let read = i32::try_from(wanted.saturating_mul(DUE_READ_FACTOR)).unwrap_or(i32::MAX);
        let due: Vec<(String, Item)> = self
            .due_in_sweeps(HEALTH_SWEEP.to_string(), now_ms, read.max(1))
            .await?
            .into_iter()
            .filter_map(|item| {
                let a = Attrs(&item);
                let (tenant, _) = keys::parse_agent_keys(a.opt_s(PK)?, a.opt_s(SK)?)?;
                let tenant = tenant.to_string();
                let key = item
                    .into_iter()
                    .filter(|(k, _)| k == PK || k == SK)
                    .collect();
                Some((tenant, key))
            })
            .collect();
        let keys: Vec<Item> = fair_by_tenant(due, |(tenant, _)| tenant.as_str(), wanted)
            .into_iter()
            .map(|(_, key)| key)
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let items = self
            .batch_get(&self.state_table, keys, None, &[], false)
            .await?;
        let mut probed = Vec::new();
        for item in &items {
            let a = Attrs(item);
            let Some(tenant) = a
                .opt_s(PK)
                .zip(a.opt_s(SK))
                .and_then(|(pk, sk)| keys::parse_agent_keys(pk, sk))
                .and_then(|(tenant, _)| TenantId::parse(tenant).ok())
            else {
                continue;
            };
            match readable_agents(std::slice::from_ref(item)).pop() {
                Some(agent) if agent.enabled && probe_url(&agent).is_some() => {
                    probed.push((tenant, agent));
                }
                // Disabled (written so before disabling took an agent out of the index), or
                // unreadable, or with nothing to probe: out of the index, or it would stay the
                // oldest due check for good. Its next change puts it back.
                _ => {
                    if let Err(error) = self.leave_health_sweep(item).await {
                        // Tried again when it next comes up; the others are probed meanwhile.
                        tracing::warn!(%error, "an agent that cannot be probed is still due");
                    }
                }
            }
        }
        Ok(probed)
    }

    async fn record_health(
        &self,
        tenant: &TenantId,
        name: &AgentName,
        health: &AgentHealth,
        next_check_ms: i64,
    ) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::agents_pk(tenant)))
            .key(SK, s(keys::agent_sk(name)))
            .update_expression(format!("SET health = :health, {SWEEP_AT} = :next"))
            // The agent may have been removed, disabled (out of the index) or lost its check
            // since the probe started.
            .condition_expression(format!(
                "attribute_exists(health_check) AND attribute_exists({SWEEP_SHARD})"
            ))
            .expression_attribute_values(":health", json(health)?)
            .expression_attribute_values(":next", n(next_check_ms));
        conditional_update(update, ReturnValue::None).await?;
        Ok(())
    }
}
