//! Short-lived caches kept inside one execution environment. They are only caches: DynamoDB
//! holds the one copy of the state, and an entry is used for a few seconds at most.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::{AgentRegistry, ConfigStore, StoreError, TenantConfig};
use baton_types::agent::Agent;
use baton_types::ids::{AgentName, TenantId};

pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// Entries one cache keeps at most: a process's memory follows what one batch needs, not how
/// many tenants it has served lately.
pub const MAX_ENTRIES: usize = 64;

/// Values by key, each fresh for `ttl` after it was loaded; at most [`MAX_ENTRIES`], the
/// oldest dropped first.
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
            make_room(&mut entries, ttl, MAX_ENTRIES);
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

/// Drops the entries older than `ttl`, then the oldest ones until one more fits under `max`.
pub fn make_room<K: Eq + Hash + Clone, V>(
    entries: &mut HashMap<K, (Instant, V)>,
    ttl: Duration,
    max: usize,
) {
    entries.retain(|_, (at, _)| at.elapsed() < ttl);
    while entries.len() >= max {
        let Some(oldest) = entries
            .iter()
            .min_by_key(|(_, (at, _))| *at)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        entries.remove(&oldest);
    }
}

/// The agent registry per tenant, as routing sees it, and single agents whole, as a call
/// needs them.
#[derive(Debug)]
pub struct AgentCache {
    registries: TtlCache<String, Vec<Agent>>,
    agents: TtlCache<(String, String), Option<Agent>>,
}

impl Default for AgentCache {
    fn default() -> Self {
        AgentCache {
            registries: TtlCache::new(DEFAULT_TTL),
            agents: TtlCache::new(DEFAULT_TTL),
        }
    }
}

impl AgentCache {
    /// The tenant's agents (routing's view: no prompts), from the cache while it is fresh.
    pub async fn agents<R>(
        &self,
        registry: &R,
        tenant: &TenantId,
    ) -> Result<Arc<Vec<Agent>>, StoreError>
    where
        R: AgentRegistry + ?Sized,
    {
        self.registries
            .get(&tenant.to_string(), || registry.routing_agents(tenant))
            .await
    }

    /// Reloads the tenant's agents, e.g. when a decision must not rest on a stale view.
    pub async fn refresh<R>(
        &self,
        registry: &R,
        tenant: &TenantId,
    ) -> Result<Arc<Vec<Agent>>, StoreError>
    where
        R: AgentRegistry + ?Sized,
    {
        self.registries
            .reload(&tenant.to_string(), || registry.routing_agents(tenant))
            .await
    }

    /// Forgets the tenant's agents after this process changed them.
    pub fn forget(&self, tenant: &TenantId) {
        self.registries.forget(&tenant.to_string());
        if let Ok(mut entries) = self.agents.entries.lock() {
            entries.retain(|(t, _), _| t != tenant);
        }
    }

    /// One agent by name, whole (with what its call needs): one read of its item, kept for a
    /// few seconds.
    pub async fn agent<R>(
        &self,
        registry: &R,
        tenant: &TenantId,
        name: &AgentName,
    ) -> Result<Option<Agent>, StoreError>
    where
        R: AgentRegistry + ?Sized,
    {
        let key = (tenant.to_string(), name.to_string());
        let found = self
            .agents
            .get(&key, || registry.agent(tenant, name))
            .await?;
        if found.is_none() {
            // An agent registered a moment ago must not be missed for the cache's lifetime.
            self.agents.forget(&key);
        }
        Ok(Option::clone(&found))
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
    pub async fn config<S>(
        &self,
        store: &S,
        tenant: &TenantId,
    ) -> Result<Arc<TenantConfig>, StoreError>
    where
        S: ConfigStore + ?Sized,
    {
        self.0
            .get(&tenant.to_string(), || store.tenant_config(tenant))
            .await
    }

    /// Forgets the tenant's settings after this process changed them.
    pub fn forget(&self, tenant: &TenantId) {
        self.0.forget(&tenant.to_string());
    }
}
