//! Calls in flight to an agent: one item per agent in the memory table whose `holders` map
//! has one entry per call, with its lease and what it holds. A slot is taken by rewriting the
//! item under an optimistic lock (after dropping holds whose lease ran out) and given back by
//! removing its entry, which also moves the lock so that no writer puts it back.

use async_trait::async_trait;
use baton_types::ids::{AgentName, TenantId};
use serde::{Deserialize, Serialize};

use super::*;

const HOLDERS: &str = "holders";
const VERSION: &str = "version";

/// One entry of the `holders` map.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hold {
    until_ms: i64,
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    needs: Resources,
}

/// The live holds of a load item at `now_ms`, and its version.
fn live_holds(
    item: Option<&Item>,
    now_ms: i64,
) -> Result<(HashMap<String, Hold>, u64), StoreError> {
    let Some(item) = item else {
        return Ok((HashMap::new(), 0));
    };
    let a = Attrs(item);
    let mut holds = HashMap::new();
    if let Some(AttributeValue::M(map)) = item.get(HOLDERS) {
        for (holder, value) in map {
            let AttributeValue::S(text) = value else {
                continue;
            };
            let hold: Hold = serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(format!("slot hold of `{holder}`: {e}")))?;
            if hold.until_ms > now_ms {
                holds.insert(holder.clone(), hold);
            }
        }
    }
    Ok((holds, a.opt_n(VERSION)?.unwrap_or(0)))
}

fn load_of(holds: &HashMap<String, Hold>) -> AgentLoad {
    let mut load = AgentLoad {
        in_flight: holds.len() as u32,
        ..AgentLoad::default()
    };
    for hold in holds.values() {
        for (name, amount) in &hold.needs {
            *load.resources_in_use.entry(name.clone()).or_default() += amount;
        }
    }
    load
}

#[async_trait]
impl RoutingState for DynamoStore {
    async fn next_turn(&self, tenant: &TenantId, capability: &str) -> Result<u64, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.memory_table)
            .key(PK, s(keys::rotation_pk(tenant)))
            .key(SK, s(capability))
            .update_expression("ADD turn :one")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(dynamo_error)?;
        let attributes = out.attributes.unwrap_or_default();
        // The counter starts at 1; turns start at 0.
        Ok(Attrs(&attributes).n::<u64>("turn")?.saturating_sub(1))
    }

    async fn loads(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
        now_ms: i64,
    ) -> Result<HashMap<String, AgentLoad>, StoreError> {
        let items = self.agent_items(tenant, agents, keys::LOAD_SK).await?;
        items
            .into_iter()
            .map(|(agent, item)| Ok((agent, load_of(&live_holds(Some(&item), now_ms)?.0))))
            .collect()
    }

    async fn acquire_slot(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        limits: Limits<'_>,
        hold: SlotHold<'_>,
        now_ms: i64,
    ) -> Result<SlotGrant, StoreError> {
        let pk = keys::memory_agent_pk(tenant, agent);
        let key = self.memory_key(&pk, keys::LOAD_SK);
        for retry in 0..=MAX_RETRIES {
            let item = self
                .client
                .get_item()
                .table_name(&self.memory_table)
                .set_key(Some(key.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(dynamo_error)?
                .item;
            let (mut holds, version) = live_holds(item.as_ref(), now_ms)?;
            // Its own earlier write, whose response was lost.
            if holds.contains_key(hold.holder) {
                return Ok(SlotGrant::Held);
            }
            if !limits.fits(&load_of(&holds), hold.needs) {
                return Ok(SlotGrant::Full);
            }
            holds.insert(
                hold.holder.to_string(),
                Hold {
                    until_ms: hold.until_ms,
                    needs: hold.needs.clone(),
                },
            );
            let mut map = HashMap::with_capacity(holds.len());
            for (holder, h) in &holds {
                map.insert(
                    holder.clone(),
                    s(serde_json::to_string(h).map_err(|e| StoreError::Corrupt(e.to_string()))?),
                );
            }
            let mut new_item = key.clone();
            new_item.insert("agent".into(), s(agent));
            new_item.insert(HOLDERS.into(), AttributeValue::M(map));
            new_item.insert(VERSION.into(), n(version + 1));
            let put = self
                .client
                .put_item()
                .table_name(&self.memory_table)
                .set_item(Some(new_item));
            let put = if version == 0 {
                put.condition_expression("attribute_not_exists(pk)")
            } else {
                put.condition_expression("version = :version")
                    .expression_attribute_values(":version", n(version))
            };
            match put.send().await {
                Ok(_) => return Ok(SlotGrant::Held),
                Err(SdkError::ServiceError(err))
                    if err.err().is_conditional_check_failed_exception() =>
                {
                    // Another call took or gave back a slot meanwhile: read again.
                    tokio::time::sleep(backoff(retry)).await;
                }
                Err(e) => return Err(dynamo_error(e)),
            }
        }
        Err(StoreError::Busy(format!(
            "the slots of agent `{agent}` kept changing under concurrent calls"
        )))
    }

    async fn release_slot(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        holder: &str,
    ) -> Result<(), StoreError> {
        let pk = keys::memory_agent_pk(tenant, agent);
        self.client
            .update_item()
            .table_name(&self.memory_table)
            .set_key(Some(self.memory_key(&pk, keys::LOAD_SK)))
            .update_expression("REMOVE #holders.#holder ADD version :one")
            .condition_expression("attribute_exists(#holders.#holder)")
            .expression_attribute_names("#holders", HOLDERS)
            .expression_attribute_names("#holder", holder)
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map(|_| ())
            .or_else(|err| match err {
                // Nothing held (already given back, or never taken): nothing to do.
                SdkError::ServiceError(e) if e.err().is_conditional_check_failed_exception() => {
                    Ok(())
                }
                e => Err(dynamo_error(e)),
            })
    }
}
