//! The agent registry.

use async_trait::async_trait;

use super::*;

fn agent_item(tenant: &str, agent: &Agent) -> Item {
    HashMap::from([
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
    ])
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
        created_at_ms: a.n("created_at")?,
        updated_at_ms: a.n("updated_at")?,
    })
}

#[async_trait]
impl AgentRegistry for DynamoStore {
    async fn register_agent(&self, tenant: &str, agent: &Agent) -> Result<(), StoreError> {
        self.put_new(agent_item(tenant, agent), || {
            format!("agent `{}`", agent.name)
        })
        .await
    }

    async fn agents(&self, tenant: &str) -> Result<Vec<Agent>, StoreError> {
        self.partition(keys::agents_pk(tenant))
            .await?
            .iter()
            .map(agent_record)
            .collect()
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
}
