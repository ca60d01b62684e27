//! Short-lived caches kept inside one execution environment. They are only caches: DynamoDB
//! holds the one copy of the state, and an entry is used for a few seconds at most.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{AgentRegistry, ConfigStore, StoreError, TenantConfig};
use crate::domain::agent::Agent;

pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Values by key, each fresh for `ttl` after it was loaded.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, Arc<V>)>>,
}

impl<K: Eq + Hash + Clone, V> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value under `key`, from the cache while it is fresh, else from `load`.
    pub async fn get<F, Fut>(&self, key: &K, load: F) -> Result<Arc<V>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        if let Some(value) = self.fresh(key) {
            return Ok(value);
        }
        self.reload(key, load).await
    }

    /// Loads the value under `key` again, e.g. when a decision must not rest on a stale one.
    pub async fn reload<F, Fut>(&self, key: &K, load: F) -> Result<Arc<V>, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, StoreError>>,
    {
        // Entries of keys no longer asked for are dropped on insert, so the cache stays small.
        Ok(self.insert(key.clone(), load().await?))
    }

    /// Stores `value` under `key`, fresh from now.
    pub fn insert(&self, key: K, value: V) -> Arc<V> {
        let value = Arc::new(value);
        if let Ok(mut entries) = self.entries.lock() {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            entries.insert(key, (Instant::now(), value.clone()));
        }
        value
    }

    /// Forgets `key`, e.g. after this process changed what it holds.
    pub fn forget(&self, key: &K) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// The value under `key` while it is fresh.
    pub fn fresh(&self, key: &K) -> Option<Arc<V>> {
        let entries = self.entries.lock().ok()?;
        let (at, value) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }
}

/// The agent registry per tenant.
#[derive(Debug)]
pub struct AgentCache(TtlCache<String, Vec<Agent>>);

impl Default for AgentCache {
    fn default() -> Self {
        AgentCache(TtlCache::new(DEFAULT_TTL))
    }
}

impl AgentCache {
    /// The tenant's agents, from the cache while it is fresh.
    pub async fn agents<R>(&self, registry: &R, tenant: &str) -> Result<Arc<Vec<Agent>>, StoreError>
    where
        R: AgentRegistry + ?Sized,
    {
        self.0
            .get(&tenant.to_string(), || registry.agents(tenant))
            .await
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
        self.0
            .reload(&tenant.to_string(), || registry.agents(tenant))
            .await
    }

    /// Forgets the tenant's agents after this process changed them.
    pub fn forget(&self, tenant: &str) {
        self.0.forget(&tenant.to_string());
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
}

/// Tenants' settings: capability defaults and priority multipliers.
#[derive(Debug)]
pub struct ConfigCache(TtlCache<String, TenantConfig>);

impl Default for ConfigCache {
    fn default() -> Self {
        ConfigCache(TtlCache::new(DEFAULT_TTL))
    }
}

impl ConfigCache {
    pub async fn config<S>(&self, store: &S, tenant: &str) -> Result<Arc<TenantConfig>, StoreError>
    where
        S: ConfigStore + ?Sized,
    {
        self.0
            .get(&tenant.to_string(), || store.tenant_config(tenant))
            .await
    }

    /// Forgets the tenant's settings after this process changed them.
    pub fn forget(&self, tenant: &str) {
        self.0.forget(&tenant.to_string());
    }
}
