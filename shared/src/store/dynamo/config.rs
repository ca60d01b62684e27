//! Tenants' settings in the state table: capability defaults and priority multipliers.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::*;
use crate::domain::routing::CapabilityDefaults;

#[async_trait]
impl ConfigStore for DynamoStore {
    async fn tenant_config(&self, tenant: &str) -> Result<TenantConfig, StoreError> {
        let mut config = TenantConfig::default();
        for item in self.partition(keys::config_pk(tenant)).await? {
            let a = Attrs(&item);
            let sk = a.s(SK)?;
            if let Some(capability) = sk.strip_prefix(keys::CAPABILITY_PREFIX) {
                let defaults = a.json("defaults")?.unwrap_or_default();
                config.capabilities.insert(capability.to_string(), defaults);
            } else if sk == keys::PRIORITIES_SK {
                config.multipliers = a.json("multipliers")?.unwrap_or_default();
            }
        }
        Ok(config)
    }

    async fn put_capability_defaults(
        &self,
        tenant: &str,
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
        tenant: &str,
        multipliers: &BTreeMap<String, f64>,
    ) -> Result<(), StoreError> {
        let item = HashMap::from([
            (PK.into(), s(keys::config_pk(tenant))),
            (SK.into(), s(keys::PRIORITIES_SK)),
            ("multipliers".into(), json(multipliers)?),
        ]);
        self.put(&self.state_table, item).await
    }
}
