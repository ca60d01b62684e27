//! Agents' capacities and tasks' needs: concurrency slots and named resources.
//!
//! An agent may declare `max_concurrency` and capacities (`{"gpu": 2, "memory_mb": 16384}`);
//! a task may declare needs (`{"gpu": 1}`). What is in use is the sum over the calls in
//! flight, each of which holds its slot and its needs under a lease, so a call whose handler
//! died gives them back when the lease runs out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The resource names Baton knows: a typo in a need must not make every agent a non-candidate.
pub const RESOURCE_NAMES: &[&str] = &["cpu", "gpu", "gpu_memory_mb", "memory_mb", "disk_mb"];
/// Bounds of `max_concurrency`.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// Amounts by resource name.
pub type Resources = BTreeMap<String, u64>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ResourceError {
    pub field: String,
    pub reason: String,
}

/// Reads `resources` as submitted (found under `field`): known names, positive integers.
pub fn parse_resources(
    field: &str,
    resources: &BTreeMap<String, serde_json::Value>,
) -> Result<Resources, ResourceError> {
    let mut parsed = Resources::new();
    for (name, amount) in resources {
        let amount = amount.as_u64().ok_or_else(|| ResourceError {
            field: format!("{field}.{name}"),
            reason: format!("must be a positive integer, got {amount}"),
        })?;
        parsed.insert(name.clone(), amount);
    }
    check_resources(field, &parsed)?;
    Ok(parsed)
}

/// Checks names and amounts of `resources`, found under `field`.
pub fn check_resources(field: &str, resources: &Resources) -> Result<(), ResourceError> {
    for (name, amount) in resources {
        if !RESOURCE_NAMES.contains(&name.as_str()) {
            return Err(ResourceError {
                field: format!("{field}.{name}"),
                reason: format!(
                    "unknown resource `{name}`; known resources are {}",
                    RESOURCE_NAMES.join(", ")
                ),
            });
        }
        if *amount == 0 {
            return Err(ResourceError {
                field: format!("{field}.{name}"),
                reason: "must be a positive integer".into(),
            });
        }
    }
    Ok(())
}

/// Checks `max_concurrency`: at least 1.
pub fn check_max_concurrency(value: Option<i64>) -> Result<Option<u32>, ResourceError> {
    value
        .map(|v| {
            u32::try_from(v)
                .ok()
                .filter(|v| (1..=MAX_CONCURRENCY).contains(v))
                .ok_or_else(|| ResourceError {
                    field: "max_concurrency".into(),
                    reason: format!("must be between 1 and {MAX_CONCURRENCY}, got {v}"),
                })
        })
        .transpose()
}

/// What an agent has in flight now: live calls and the resources they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLoad {
    pub in_flight: u32,
    pub resources_in_use: Resources,
}

/// An agent's limits: how many calls at once, and its capacities.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub max_concurrency: Option<u32>,
    pub capacities: &'a Resources,
}

impl Limits<'_> {
    /// Whether the agent could ever hold `needs`, even idle.
    pub fn can_hold(&self, needs: &Resources) -> bool {
        needs
            .iter()
            .all(|(name, need)| self.capacities.get(name).is_some_and(|cap| cap >= need))
    }

    /// Whether one more call with `needs` fits beside `load`.
    pub fn fits(&self, load: &AgentLoad, needs: &Resources) -> bool {
        let slot_free = self.max_concurrency.is_none_or(|max| load.in_flight < max);
        slot_free
            && needs.iter().all(|(name, need)| {
                let used = load.resources_in_use.get(name).copied().unwrap_or(0);
                self.capacities
                    .get(name)
                    .is_some_and(|cap| used.saturating_add(*need) <= *cap)
            })
    }

    /// Whether calls to the agent must be counted: it has a limit a call could run into.
    pub fn is_limited(&self, needs: &Resources) -> bool {
        self.max_concurrency.is_some() || !needs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(pairs: &[(&str, u64)]) -> Resources {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn unknown_names_and_zero_amounts_are_refused_with_their_field() {
        let err = check_resources("resources", &resources(&[("gpus", 1)])).unwrap_err();
        assert_eq!(err.field, "resources.gpus");
        let err = check_resources("resources", &resources(&[("gpu", 0)])).unwrap_err();
        assert_eq!(err.field, "resources.gpu");
        assert!(check_resources("resources", &resources(&[("gpu", 2), ("memory_mb", 1)])).is_ok());
        assert_eq!(
            check_max_concurrency(Some(0)).unwrap_err().field,
            "max_concurrency"
        );
        assert_eq!(check_max_concurrency(Some(4)).unwrap(), Some(4));
    }

    #[test]
    fn a_call_fits_while_slots_and_capacities_last() {
        let capacities = resources(&[("gpu", 2), ("memory_mb", 16_384)]);
        let limits = Limits {
            max_concurrency: Some(3),
            capacities: &capacities,
        };
        let needs = resources(&[("gpu", 1)]);
        assert!(limits.can_hold(&needs));
        assert!(!limits.can_hold(&resources(&[("gpu", 3)])));
        assert!(!limits.can_hold(&resources(&[("cpu", 1)])));
        let mut load = AgentLoad::default();
        assert!(limits.fits(&load, &needs));
        load.in_flight = 2;
        load.resources_in_use = resources(&[("gpu", 2)]);
        assert!(!limits.fits(&load, &needs), "no gpu left");
        assert!(limits.fits(&load, &Resources::new()), "a slot is left");
        load.in_flight = 3;
        assert!(!limits.fits(&load, &Resources::new()), "no slot left");
    }
}
