//! Tenants' settings in the state table: capability defaults, priority multipliers and the
//! operator's quotas; and the tenant's pacing cells, which admission changes.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::*;
use baton_types::ids::TenantId;
use baton_types::quota::{PaceState, PaceStep, QuotaOverrides};
use baton_types::routing::CapabilityDefaults;

const TAT: &str = "tat_us";
const URGENT_TAT: &str = "urgent_tat_us";

fn pace_of(item: &Item) -> Result<PaceState, StoreError> {
    let a = Attrs(item);
    Ok(PaceState {
        tat_us: a.opt_n(TAT)?,
        urgent_tat_us: a.opt_n(URGENT_TAT)?,
    })
}

#[async_trait]
impl ConfigStore for DynamoStore {
    async fn tenant_config(&self, tenant: &TenantId) -> Result<TenantConfig, StoreError> {
        let mut config = TenantConfig::default();
        for item in self.partition(keys::config_pk(tenant)).await? {
            let a = Attrs(&item);
            let sk = a.s(SK)?;
            if let Some(capability) = sk.strip_prefix(keys::CAPABILITY_PREFIX) {
                let defaults = a.json("defaults")?.unwrap_or_default();
                config.capabilities.insert(capability.to_string(), defaults);
            } else if sk == keys::PRIORITIES_SK {
                config.multipliers = a.json("multipliers")?.unwrap_or_default();
            } else if sk == keys::QUOTAS_SK {
                config.quotas = a.json("quotas")?.unwrap_or_default();
            }
        }
        Ok(config)
    }

    async fn put_capability_defaults(
        &self,
        tenant: &TenantId,
        capability: &str,
        defaults: &CapabilityDefaults,
    ) -> Result<(), StoreError> {
        let item = HashMap::from([
            (PK.into(), s(keys::config_pk(tenant))),
            (SK.into(), s(keys::capability_sk(capability))),
            ("defaults".into(), json(defaults)?),
        ]);
        self.put(&self.state_table, item).await
    }

    async fn put_multipliers(
        &self,
        tenant: &TenantId,
        multipliers: &BTreeMap<String, f64>,
    ) -> Result<(), StoreError> {
        let item = HashMap::from([
            (PK.into(), s(keys::config_pk(tenant))),
            (SK.into(), s(keys::PRIORITIES_SK)),
            ("multipliers".into(), json(multipliers)?),
        ]);
        self.put(&self.state_table, item).await
    }

    async fn put_quotas(
        &self,
        tenant: &TenantId,
        quotas: &QuotaOverrides,
    ) -> Result<(), StoreError> {
        let item = HashMap::from([
            (PK.into(), s(keys::config_pk(tenant))),
            (SK.into(), s(keys::QUOTAS_SK)),
            ("quotas".into(), json(quotas)?),
        ]);
        self.put(&self.state_table, item).await
    }
}

#[async_trait]
impl AdmissionStore for DynamoStore {
    /// Two atomic updates at most, no read: the first finds an idle tenant (its `tat` at or
    /// below the floor), the second extends a busy one within its backlog. Each returns the
    /// cells as they were, so the turns and the urgent share are decided on what was
    /// replaced. A retried write whose response was lost counts its tasks twice: the tenant's
    /// pace errs on the side of the deployment.
    async fn advance_pace(
        &self,
        tenant: &TenantId,
        step: &PaceStep,
    ) -> Result<PaceAdvance, StoreError> {
        let update = || {
            self.client
                .update_item()
                .table_name(&self.state_table)
                .key(PK, s(keys::config_pk(tenant)))
                .key(SK, s(keys::PACE_SK))
                .expression_attribute_values(":floor", n(step.floor_us))
        };
        let mut tat_us = None;
        if step.fits_from_idle() {
            let idle = update()
                .update_expression(format!("SET {TAT} = :tat"))
                .condition_expression(format!("attribute_not_exists({TAT}) OR {TAT} <= :floor"))
                .expression_attribute_values(":tat", n(step.floor_us + step.by_us));
            match conditional_update(idle, ReturnValue::AllOld).await? {
                Conditional::Applied(old) => {
                    return Ok(PaceAdvance::Advanced {
                        base_us: step.floor_us,
                        old: pace_of(&old)?,
                    })
                }
                Conditional::Rejected(current) => {
                    tat_us = current
                        .as_ref()
                        .map(pace_of)
                        .transpose()?
                        .and_then(|p| p.tat_us)
                }
            }
        }
        let busy = update()
            .update_expression(format!("SET {TAT} = {TAT} + :by"))
            .condition_expression(format!("{TAT} > :floor AND {TAT} <= :limit"))
            .expression_attribute_values(":by", n(step.by_us))
            .expression_attribute_values(":limit", n(step.limit_us));
        Ok(match conditional_update(busy, ReturnValue::AllOld).await? {
            Conditional::Applied(old) => {
                let old = pace_of(&old)?;
                PaceAdvance::Advanced {
                    base_us: old.tat_us.unwrap_or(step.floor_us),
                    old,
                }
            }
            Conditional::Rejected(current) => {
                let current = current.as_ref().map(pace_of).transpose()?;
                let tat = current.and_then(|p| p.tat_us).or(tat_us);
                PaceAdvance::Refused {
                    tat_us: tat.unwrap_or(step.floor_us).max(step.floor_us),
                }
            }
        })
    }

    async fn save_urgent(
        &self,
        tenant: &TenantId,
        read: Option<i64>,
        next: i64,
    ) -> Result<bool, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::config_pk(tenant)))
            .key(SK, s(keys::PACE_SK))
            .update_expression(format!("SET {URGENT_TAT} = :next"))
            .expression_attribute_values(":next", n(next));
        let update = match read {
            Some(at) => update
                .condition_expression(format!("{URGENT_TAT} = :read"))
                .expression_attribute_values(":read", n(at)),
            None => update.condition_expression(format!("attribute_not_exists({URGENT_TAT})")),
        };
        Ok(matches!(
            conditional_update(update, ReturnValue::None).await?,
            Conditional::Applied(_)
        ))
    }

    async fn running_count(&self, tenant: &TenantId, limit: u32) -> Result<u64, StoreError> {
        let mut running = 0;
        let mut start_key = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.state_table)
                .index_name(keys::RUNNING_INDEX)
                .key_condition_expression(format!("{} = :pk", keys::RUN_PK))
                .expression_attribute_values(":pk", s(keys::running_pk(tenant)))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .limit(i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(dynamo_error)?;
            running += out.count.max(0) as u64;
            start_key = out.last_evaluated_key;
            if start_key.is_none() || running > u64::from(limit) {
                return Ok(running);
            }
        }
    }
}

/// The count on a tenant's counter item (`{tenant}#CONFIG` / `COUNT#{counter}`), through a
/// placeholder: `count` is one of DynamoDB's reserved words.
const COUNT: &str = "#count";

#[async_trait]
impl TenantCounters for DynamoStore {
    async fn take_place(
        &self,
        tenant: &TenantId,
        counter: &str,
        counted: u64,
        limit: u64,
    ) -> Result<bool, StoreError> {
        // Where no count is kept yet, `counted` starts it: full already, nothing to write.
        if counted >= limit && self.counter(tenant, counter).await?.is_none() {
            return Ok(false);
        }
        let update = self
            .client
            .update_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::config_pk(tenant)))
            .key(SK, s(keys::counter_sk(counter)))
            .expression_attribute_names(COUNT, "count")
            .update_expression(format!(
                "SET {COUNT} = if_not_exists({COUNT}, :counted) + :one"
            ))
            .condition_expression(format!("attribute_not_exists({COUNT}) OR {COUNT} < :limit"))
            .expression_attribute_values(":counted", n(counted))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit));
        Ok(matches!(
            conditional_update(update, ReturnValue::None).await?,
            Conditional::Applied(_)
        ))
    }

    async fn give_place(&self, tenant: &TenantId, counter: &str) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.state_table)
            .key(PK, s(keys::config_pk(tenant)))
            .key(SK, s(keys::counter_sk(counter)))
            .expression_attribute_names(COUNT, "count")
            .update_expression(format!("SET {COUNT} = {COUNT} - :one"))
            .condition_expression(format!("{COUNT} > :zero"))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0));
        conditional_update(update, ReturnValue::None).await?;
        Ok(())
    }
}

impl DynamoStore {
    async fn counter(&self, tenant: &TenantId, counter: &str) -> Result<Option<u64>, StoreError> {
        let item = self
            .state_item(keys::config_pk(tenant), &keys::counter_sk(counter))
            .await?;
        item.as_ref()
            .map_or(Ok(None), |item| Attrs(item).opt_n("count"))
    }
}
