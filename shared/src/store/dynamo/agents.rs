//! The agent registry, and the health the scheduled probes record on each agent.

use async_trait::async_trait;

use super::*;
use crate::store::keys::{HEALTH_SWEEP, SWEEP_AT, SWEEP_SHARD};

fn agent_item(tenant: &str, agent: &Agent) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        (PK.into(), s(keys::agents_pk(tenant))),
        (SK.into(), s(keys::agent_sk(&agent.name))),
        ("name".into(), s(agent.name.as_str())),
        ("kind".into(), s("http")),
        ("endpoint".into(), s(agent.endpoint.as_str())),
        ("capabilities".into(), string_list(&agent.capabilities)),
        ("timeout_ms".into(), n(agent.timeout_ms)),
        ("enabled".into(), AttributeValue::Bool(agent.enabled)),
        ("created_at".into(), n(agent.created_at_ms)),
        ("updated_at".into(), n(agent.updated_at_ms)),
    ]);
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
    if let Some(check) = &agent.health_check {
        item.insert("health_check".into(), json(check)?);
        // In the sweeps index, due at once: the first probe comes with the next sweep.
        item.insert(SWEEP_SHARD.into(), s(HEALTH_SWEEP));
        item.insert(SWEEP_AT.into(), n(agent.updated_at_ms));
    }
    Ok(item)
}

fn agent_record(item: &Item) -> Result<Agent, StoreError> {
    let a = Attrs(item);
    let kind = match a.s("kind")? {
        "http" => AgentKind::Http,
        other => return Err(StoreError::Corrupt(format!("unknown agent kind `{other}`"))),
    };
    Ok(Agent {
        name: a.s("name")?.into(),
        kind,
        endpoint: a.s("endpoint")?.into(),
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
        health: a.json("health")?,
        created_at_ms: a.n("created_at")?,
        updated_at_ms: a.n("updated_at")?,
    })
}

/// The readable agents among `items`; an unreadable one is logged and left out, so that one
/// bad item never takes a tenant's whole registry down.
fn readable_agents(items: &[Item]) -> Vec<Agent> {
    items
        .iter()
        .filter_map(|item| match agent_record(item) {
            Ok(agent) => Some(agent),
            Err(error) => {
                let key = Attrs(item).opt_s(SK).unwrap_or("?");
                tracing::error!(item = key, %error, "unreadable agent item skipped");
                None
            }
        })
        .collect()
}

#[async_trait]
impl AgentRegistry for DynamoStore {
    async fn register_agent(&self, tenant: &str, agent: &Agent) -> Result<(), StoreError> {
        self.put_new(
            agent_item(tenant, agent)?,
            &["created_at", "endpoint"],
            || format!("agent `{}`", agent.name),
        )
        .await
    }

    async fn replace_agent(&self, tenant: &str, agent: &Agent) -> Result<(), StoreError> {
        self.put(&self.state_table, agent_item(tenant, agent)?)
            .await
    }

    async fn agents(&self, tenant: &str) -> Result<Vec<Agent>, StoreError> {
        Ok(readable_agents(
            &self.partition(keys::agents_pk(tenant)).await?,
        ))
    }

    async fn agent(&self, tenant: &str, name: &str) -> Result<Option<Agent>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::agents_pk(tenant)))
            .key(SK, s(keys::agent_sk(name)))
            .send()
            .await
            .map_err(dynamo_error)?;
        out.item.as_ref().map(agent_record).transpose()
    }

    async fn due_health_checks(
        &self,
        now_ms: i64,
        limit: i32,
    ) -> Result<Vec<(String, Agent)>, StoreError> {
        let keys: Vec<Item> = self
            .due_in_sweeps(HEALTH_SWEEP.to_string(), now_ms, limit)
            .await?
            .into_iter()
            .map(|item| {
                item.into_iter()
                    .filter(|(k, _)| k == PK || k == SK)
                    .collect()
            })
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let items = self
            .batch_get(&self.state_table, keys, None, &[], false)
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let a = Attrs(item);
                let (tenant, _) = keys::parse_agent_keys(a.opt_s(PK)?, a.opt_s(SK)?)?;
                let agent = readable_agents(std::slice::from_ref(item)).pop()?;
                Some((tenant.to_string(), agent))
            })
            .collect())
    }

    async fn record_health(
        &self,
        tenant: &str,
        name: &str,
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
            // The agent may have been removed or lost its check since the probe started.
            .condition_expression("attribute_exists(health_check)")
            .expression_attribute_values(":health", json(health)?)
            .expression_attribute_values(":next", n(next_check_ms));
        conditional_update(update, ReturnValue::None).await?;
        Ok(())
    }
}
