//! What the API's stats read: every learned stats record of the tenant's agents, and a count
//! of the tenant's running workflows.

use async_trait::async_trait;
use baton_types::ids::{AgentName, TenantId};

use super::learning::stats_record;
use super::*;
use baton_chain::store::StatsStore;
use baton_types::stats::LearnedStats;

/// Agents whose stats are read at once.
const AGENT_READS: usize = 8;

impl DynamoStore {
    /// One agent's stats records, one per task type: a query on its memory partition limited
    /// to the `STATS#` sort keys, so its outcome history is not read.
    async fn agent_stats_records(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
    ) -> Result<Vec<LearnedStats>, StoreError> {
        let mut records = Vec::new();
        let mut start_key = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.memory_table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :stats)")
                .expression_attribute_values(":pk", s(keys::memory_agent_pk(tenant, agent)))
                .expression_attribute_values(":stats", s(keys::stats_sk("")))
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(dynamo_error)?;
            for item in out.items.unwrap_or_default() {
                let sk = Attrs(&item).s(SK)?;
                let task_type = sk.strip_prefix(keys::stats_sk("").as_str()).unwrap_or(sk);
                records.push(LearnedStats {
                    agent: agent.to_string(),
                    task_type: task_type.to_string(),
                    stats: stats_record(&item)?.0,
                });
            }
            start_key = out.last_evaluated_key;
            if start_key.is_none() {
                return Ok(records);
            }
        }
    }
}

#[async_trait]
impl StatsStore for DynamoStore {
    async fn learned_stats(
        &self,
        tenant: &TenantId,
        agents: &[AgentName],
    ) -> Result<Vec<LearnedStats>, StoreError> {
        let mut records = Vec::new();
        for chunk in agents.chunks(AGENT_READS) {
            let reads = chunk
                .iter()
                .map(|agent| self.agent_stats_records(tenant, agent));
            for agent in futures::future::join_all(reads).await {
                records.extend(agent?);
            }
        }
        Ok(records)
    }

    /// Counts the tenant's unfinished workflows in the sparse `running` index, under the
    /// tenant's own key: no other tenant's keys are read. Keys only, about 100 bytes each:
    /// a read unit per ~40 running workflows, bounded by the tenant's quota.
    async fn running_workflows(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        self.running_count(tenant, u32::MAX - 1).await
    }
}
