//! A short-lived, per-tenant cache of the agent registry, kept inside one execution
//! environment. It is only a cache: the registry in DynamoDB is the one copy of the state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{AgentRegistry, StoreError};
use crate::domain::agent::Agent;

pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

type CachedAgents = (Instant, Arc<Vec<Agent>>);

#[derive(Debug)]
pub struct AgentCache {
    ttl: Duration,
    /// Per tenant: when the list was loaded, and the list.
    entries: Mutex<HashMap<String, CachedAgents>>,
}

impl Default for AgentCache {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl AgentCache {
    pub fn new(ttl: Duration) -> Self {
        AgentCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's agents, from the cache while it is fresh.
    pub async fn agents<R>(&self, registry: &R, tenant: &str) -> Result<Arc<Vec<Agent>>, StoreError>
    where
        R: AgentRegistry + ?Sized,
    {
        if let Some(agents) = self.fresh(tenant) {
            return Ok(agents);
        }
        self.refresh(registry, tenant).await
    }

    /// Reloads the tenant's agents, e.g. when a decision must not rest on a stale view.
    pub async fn refresh<R>(
        &self,
        registry: &R,
        tenant: &str,
    ) -> Result<Arc<Vec<Agent>>, StoreError>
    where
        R: AgentRegistry + ?Sized,
    {
        let agents = Arc::new(registry.agents(tenant).await?);
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(tenant.to_string(), (Instant::now(), agents.clone()));
        }
        Ok(agents)
    }

    /// One agent by name; a miss in a fresh cache is checked against the registry.
    pub async fn agent<R>(
        &self,
        registry: &R,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Agent>, StoreError>
    where
        R: AgentRegistry + ?Sized,
    {
        let cached = self.agents(registry, tenant).await?;
        if let Some(agent) = cached.iter().find(|a| a.name == name) {
            return Ok(Some(agent.clone()));
        }
        let agents = self.refresh(registry, tenant).await?;
        Ok(agents.iter().find(|a| a.name == name).cloned())
    }

    fn fresh(&self, tenant: &str) -> Option<Arc<Vec<Agent>>> {
        let entries = self.entries.lock().ok()?;
        let (at, agents) = entries.get(tenant)?;
        (at.elapsed() < self.ttl).then(|| agents.clone())
    }
}
