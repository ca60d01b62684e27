//! The registry's rules: what an agent needs, the guard that keeps
//! every enabled agent's needs registered and enabled, cycles among needs, versions for
//! `If-Match`, the merge of a `PATCH`, and the summaries by category and by health.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use super::agent::Agent;
use super::health::HealthStatus;

/// The category that agents registered without one are listed under.
pub const UNCATEGORIZED: &str = "uncategorized";

/// The agents `agent` needs: its `requires` and, in conversations, the sync agents whose
/// results it waits for.
pub fn requirements(agent: &Agent) -> BTreeSet<&str> {
    let conversation = agent.conversation.iter().flat_map(|c| &c.depends_on);
    agent
        .requires
        .iter()
        .chain(conversation)
        .map(String::as_str)
        .collect()
}

/// Why the registry refuses a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Disabling or deleting an agent that enabled agents need.
    #[error("`{agent}` is required by {}", .dependents.join(", "))]
    RequiredBy {
        agent: String,
        dependents: Vec<String>,
    },
    /// Enabling an agent (or registering it enabled) while some of its needs are disabled.
    #[error("`{agent}` needs {}, which {} disabled", .disabled.join(", "), if .disabled.len() == 1 { "is" } else { "are" })]
    NeedsDisabled {
        agent: String,
        disabled: Vec<String>,
    },
    #[error("`{agent}` depends on {}, which {} not registered", .missing.join(", "), if .missing.len() == 1 { "is" } else { "are" })]
    UnknownDependency { agent: String, missing: Vec<String> },
    #[error("dependencies may not form a cycle: {}", .path.join(" -> "))]
    Cycle { path: Vec<String> },
}

impl GuardError {
    /// The registration field the refusal is about.
    pub fn field(&self) -> &'static str {
        match self {
            GuardError::RequiredBy { .. } | GuardError::NeedsDisabled { .. } => "enabled",
            GuardError::UnknownDependency { .. } | GuardError::Cycle { .. } => "requires",
        }
    }

    /// The agents the refusal names, for the error's details.
    pub fn agents(&self) -> &[String] {
        match self {
            GuardError::RequiredBy { dependents, .. } => dependents,
            GuardError::NeedsDisabled { disabled, .. } => disabled,
            GuardError::UnknownDependency { missing, .. } => missing,
            GuardError::Cycle { path } => path,
        }
    }
}

/// The enabled agents, other than `name` itself, that need `name`, by name.
pub fn dependents(agents: &[Agent], name: &str) -> Vec<String> {
    let mut names: Vec<String> = agents
        .iter()
        .filter(|a| a.enabled && a.name != name && requirements(a).contains(name))
        .map(|a| a.name.to_string())
        .collect();
    names.sort();
    names
}

/// Whether `name` may be disabled or deleted: no enabled agent needs it.
pub fn check_release(agents: &[Agent], name: &str) -> Result<(), GuardError> {
    let dependents = dependents(agents, name);
    if dependents.is_empty() {
        Ok(())
    } else {
        Err(GuardError::RequiredBy {
            agent: name.to_string(),
            dependents,
        })
    }
}

/// Whether `agent` may be stored as it is, replacing any agent of its name in `agents` (the
/// tenant's agents as they are now): its needs are registered, enabled if it is, and free of
/// cycles; and if it is disabled, no enabled agent needs it.
pub fn check_change(agents: &[Agent], agent: &Agent) -> Result<(), GuardError> {
    let others: BTreeMap<&str, &Agent> = agents
        .iter()
        .filter(|a| a.name != agent.name)
        .map(|a| (a.name.as_str(), a))
        .collect();
    let needs = requirements(agent);
    let missing: Vec<String> = needs
        .iter()
        .filter(|n| !others.contains_key(*n))
        .map(|n| n.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(GuardError::UnknownDependency {
            agent: agent.name.to_string(),
            missing,
        });
    }
    if let Some(path) = cycle_through(&others, agent) {
        return Err(GuardError::Cycle { path });
    }
    if agent.enabled {
        let disabled: Vec<String> = needs
            .iter()
            .filter(|n| others.get(*n).is_some_and(|a| !a.enabled))
            .map(|n| n.to_string())
            .collect();
        if !disabled.is_empty() {
            return Err(GuardError::NeedsDisabled {
                agent: agent.name.to_string(),
                disabled,
            });
        }
        Ok(())
    } else {
        check_release(agents, &agent.name)
    }
}

/// A path of needs from `agent` back to itself, if storing it would close one.
fn cycle_through(others: &BTreeMap<&str, &Agent>, agent: &Agent) -> Option<Vec<String>> {
    // Depth-first from the agent's needs, through the others' needs, looking for its name.
    let mut stack: Vec<Vec<&str>> = requirements(agent)
        .into_iter()
        .map(|n| vec![agent.name.as_str(), n])
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = *path.last()?;
        if last == agent.name {
            return Some(path.iter().map(|s| s.to_string()).collect());
        }
        if !seen.insert(last) {
            continue;
        }
        for next in others
            .get(last)
            .map(|a| requirements(a))
            .unwrap_or_default()
        {
            let mut longer = path.clone();
            longer.push(next);
            stack.push(longer);
        }
    }
    None
}

/// The `ETag` of an agent's version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// What an `If-Match` header accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: whatever version exists.
    Any,
    /// One of these versions.
    Versions(Vec<u64>),
}

impl IfMatch {
    /// Parses `"3"`, `W/"3"`, `"3", "4"` or `*`; None if no tag is one of Baton's.
    pub fn parse(header: &str) -> Option<IfMatch> {
        if header.trim() == "*" {
            return Some(IfMatch::Any);
        }
        let versions: Option<Vec<u64>> = header
            .split(',')
            .map(|tag| {
                let tag = tag.trim();
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
            })
            .collect();
        versions.filter(|v| !v.is_empty()).map(IfMatch::Versions)
    }

    pub fn matches(&self, version: u64) -> bool {
        match self {
            IfMatch::Any => true,
            IfMatch::Versions(versions) => versions.contains(&version),
        }
    }
}

/// The fields a registration sets: what `PATCH` merges into and `PUT` replaces.
pub const REGISTRATION_FIELDS: [&str; 26] = [
    "name",
    "kind",
    "endpoint",
    "function",
    "base_url",
    "model",
    "model_id",
    "system_prompt",
    "parameters",
    "api_key",
    "inference",
    "capabilities",
    "timeout_ms",
    "enabled",
    "retry",
    "health_check",
    "circuit_breaker",
    "weight",
    "max_concurrency",
    "resources",
    "keywords",
    "task_types",
    "conversation",
    "requires",
    "category",
    "description",
];

/// The agent as a registration body: what a `PATCH` is merged into.
pub fn registration_of(agent: &Agent) -> Value {
    let Ok(Value::Object(all)) = serde_json::to_value(agent) else {
        return Value::Object(Map::new());
    };
    let fields: Map<String, Value> = all
        .into_iter()
        .filter(|(k, v)| REGISTRATION_FIELDS.contains(&k.as_str()) && !v.is_null())
        .collect();
    Value::Object(fields)
}

/// Applies a JSON merge patch (RFC 7396): objects merge key by key, `null` removes a key, and
/// anything else replaces what was there.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(fields) = target {
        for (key, change) in changes {
            if change.is_null() {
                fields.remove(key);
            } else {
                merge_patch(fields.entry(key.clone()).or_insert(Value::Null), change);
            }
        }
    }
}

/// One category's agents, for `GET /v1/agents/categories`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Category {
    pub category: String,
    pub agents: Vec<String>,
    pub enabled: usize,
}

/// The agents by category, categories and agents in name order.
pub fn by_category(agents: &[Agent]) -> Vec<Category> {
    let mut groups: BTreeMap<&str, Vec<&Agent>> = BTreeMap::new();
    for agent in agents {
        let category = agent.category.as_deref().unwrap_or(UNCATEGORIZED);
        groups.entry(category).or_default().push(agent);
    }
    groups
        .into_iter()
        .map(|(category, members)| {
            let mut names: Vec<String> = members.iter().map(|a| a.name.to_string()).collect();
            names.sort();
            Category {
                category: category.to_string(),
                enabled: members.iter().filter(|a| a.enabled).count(),
                agents: names,
            }
        })
        .collect()
}

/// An agent item the registry could not read, for the health summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnreadableAgent {
    /// The agent's name, or the item's key when even that is unreadable.
    pub name: String,
    pub reason: String,
}

/// The registry's health at a glance, for `GET /v1/agents/health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthSummary {
    pub total: usize,
    pub enabled: usize,
    pub disabled: usize,
    /// Enabled agents whose last probe found them healthy.
    pub healthy: usize,
    pub degraded: usize,
    pub unhealthy: usize,
    /// Enabled agents that no probe has looked at: no health check, or none run yet.
    pub unchecked: usize,
    /// Enabled agents whose circuit is open now.
    pub circuits_open: Vec<String>,
    /// Items that could not be read; routing skips them.
    pub unreadable: Vec<UnreadableAgent>,
}

/// Counts the agents by state; `open_circuit` says whether an agent's circuit is open now.
pub fn health_summary(
    agents: &[Agent],
    unreadable: Vec<UnreadableAgent>,
    open_circuit: impl Fn(&Agent) -> bool,
) -> HealthSummary {
    let enabled: Vec<&Agent> = agents.iter().filter(|a| a.enabled).collect();
    let with_status = |status: HealthStatus| {
        enabled
            .iter()
            .filter(|a| a.health.as_ref().is_some_and(|h| h.status == status))
            .count()
    };
    let mut circuits_open: Vec<String> = enabled
        .iter()
        .filter(|a| open_circuit(a))
        .map(|a| a.name.to_string())
        .collect();
    circuits_open.sort();
    HealthSummary {
        total: agents.len() + unreadable.len(),
        enabled: enabled.len(),
        disabled: agents.len() - enabled.len(),
        healthy: with_status(HealthStatus::Healthy),
        degraded: with_status(HealthStatus::Degraded),
        unhealthy: with_status(HealthStatus::Unhealthy),
        unchecked: enabled.iter().filter(|a| a.health.is_none()).count(),
        circuits_open,
        unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentRegistration;
    use serde_json::json;

    fn agent(name: &str, depends_on: &[&str], enabled: bool) -> Agent {
        let registration: AgentRegistration = serde_json::from_value(json!({
            "name": name,
            "endpoint": format!("https://{name}.example.com/run"),
            "capabilities": ["work"],
            "requires": depends_on,
            "enabled": enabled,
        }))
        .expect("registration");
        registration.into_agent(1).expect("valid agent")
    }

    #[test]
    fn disabling_an_agent_that_enabled_agents_need_names_them() {
        let agents = vec![
            agent("auth", &[], true),
            agent("finance-ai", &["auth"], true),
            agent("email-ai", &["auth"], true),
            agent("old-ai", &["auth"], false),
        ];
        let refused = check_release(&agents, "auth").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "`auth` is required by email-ai, finance-ai"
        );
        assert_eq!(refused.field(), "enabled");
        assert!(check_release(&agents, "finance-ai").is_ok());
        // The same guard holds when the change is a replacement that disables it.
        let disabled = agent("auth", &[], false);
        assert!(matches!(
            check_change(&agents, &disabled),
            Err(GuardError::RequiredBy { .. })
        ));
    }

    #[test]
    fn an_enabled_agent_needs_its_dependencies_registered_and_enabled() {
        let agents = vec![agent("auth", &[], false), agent("db", &[], true)];
        let needs_disabled = check_change(&agents, &agent("api", &["auth", "db"], true));
        assert_eq!(
            needs_disabled.unwrap_err().to_string(),
            "`api` needs auth, which is disabled"
        );
        assert!(check_change(&agents, &agent("api", &["auth", "db"], false)).is_ok());
        let unknown = check_change(&agents, &agent("api", &["ghost", "db"], true)).unwrap_err();
        assert_eq!(unknown.field(), "requires");
        assert_eq!(unknown.agents(), ["ghost".to_string()]);
    }

    #[test]
    fn a_change_that_closes_a_cycle_is_refused_with_the_cycle() {
        let agents = vec![
            agent("a", &["b"], true),
            agent("b", &["c"], true),
            agent("c", &[], true),
        ];
        let cycle = check_change(&agents, &agent("c", &["a"], true)).unwrap_err();
        assert_eq!(
            cycle,
            GuardError::Cycle {
                path: vec!["c".into(), "a".into(), "b".into(), "c".into()]
            }
        );
        assert!(check_change(&agents, &agent("d", &["a", "c"], true)).is_ok());
    }

    #[test]
    fn conversation_dependencies_count_as_needs() {
        let mut nutrition = agent("nutrition", &[], true);
        nutrition.conversation = Some(
            serde_json::from_value(json!({ "role": "sync", "depends_on": ["privacy"] }))
                .expect("role"),
        );
        let agents = vec![agent("privacy", &[], true), nutrition];
        assert_eq!(
            check_release(&agents, "privacy").unwrap_err().agents(),
            ["nutrition".to_string()]
        );
    }

    #[test]
    fn if_match_takes_strong_weak_lists_and_any() {
        assert_eq!(IfMatch::parse("\"3\""), Some(IfMatch::Versions(vec![3])));
        assert_eq!(
            IfMatch::parse("W/\"3\", \"4\""),
            Some(IfMatch::Versions(vec![3, 4]))
        );
        assert_eq!(IfMatch::parse(" * "), Some(IfMatch::Any));
        assert_eq!(IfMatch::parse("3"), None);
        assert_eq!(IfMatch::parse("\"abc\""), None);
        assert!(IfMatch::parse(&etag(7)).is_some_and(|m| m.matches(7) && !m.matches(8)));
    }

    #[test]
    fn a_merge_patch_merges_objects_removes_nulls_and_replaces_the_rest() {
        let mut target = json!({ "a": 1, "b": { "c": 2, "d": 3 }, "list": [1, 2] });
        merge_patch(
            &mut target,
            &json!({ "a": null, "b": { "c": 5 }, "list": [3], "new": true }),
        );
        assert_eq!(
            target,
            json!({ "b": { "c": 5, "d": 3 }, "list": [3], "new": true })
        );
    }

    #[test]
    fn an_agents_registration_reads_back_as_the_same_agent() {
        let registration = json!({
            "name": "planner",
            "kind": "http",
            "endpoint": "https://planner.example.com/run",
            "capabilities": ["plan", "summarize"],
            "timeout_ms": 2500,
            "enabled": true,
            "retry": { "max_attempts": 4, "backoff": "exponential", "base_ms": 100, "max_ms": 2000, "jitter": "full" },
            "health_check": { "path": "/health", "interval_s": 30 },
            "circuit_breaker": { "failure_threshold": 3, "failure_rate": 0.5, "window": 10, "cooldown_s": 20 },
            "weight": 2.5,
            "max_concurrency": 4,
            "resources": { "gpu": 1 },
            "keywords": ["plan"],
            "task_types": ["planning"],
            "requires": [],
            "category": "planning",
            "description": "Plans things",
        });
        let agent = serde_json::from_value::<AgentRegistration>(registration)
            .expect("registration")
            .into_agent(5)
            .expect("agent");
        let again = serde_json::from_value::<AgentRegistration>(registration_of(&agent))
            .expect("reads back")
            .into_agent(5)
            .expect("valid");
        assert_eq!(again, agent);
    }

    #[test]
    fn depends_on_is_read_as_requires_but_not_beside_it() {
        let with = |fields: serde_json::Value| {
            let mut body = json!({ "name": "b", "endpoint": "https://b.example.com/run",
                "capabilities": ["work"] });
            body.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            serde_json::from_value::<AgentRegistration>(body)
                .expect("registration")
                .into_agent(1)
        };
        let old = with(json!({ "depends_on": ["a"] })).expect("the old name is read");
        assert_eq!(old.requires, ["a"]);
        assert_eq!(registration_of(&old)["requires"], json!(["a"]));
        let both = with(json!({ "requires": ["a"], "depends_on": ["a"] })).unwrap_err();
        assert_eq!(both.field(), "requires");
        // A record stored before the rename reads the same.
        let mut stored = serde_json::to_value(&old).unwrap();
        let list = stored.as_object_mut().unwrap().remove("requires").unwrap();
        stored["depends_on"] = list;
        assert_eq!(serde_json::from_value::<Agent>(stored).unwrap(), old);
    }

    #[test]
    fn the_summaries_count_by_category_and_health() {
        let mut a = agent("a", &[], true);
        a.category = Some("finance".into());
        a.health = Some(crate::health::AgentHealth {
            status: HealthStatus::Degraded,
            checked_at_ms: 1,
            consecutive_failures: 0,
            detail: None,
        });
        let b = agent("b", &[], false);
        let categories = by_category(&[a.clone(), b.clone()]);
        assert_eq!(categories[0].category, "finance");
        assert_eq!(categories[1].category, UNCATEGORIZED);
        assert_eq!(categories[1].enabled, 0);
        let unreadable = vec![UnreadableAgent {
            name: "broken".into(),
            reason: "unknown kind `grpc`".into(),
        }];
        let summary = health_summary(&[a, b], unreadable, |agent| agent.name == "a");
        assert_eq!(
            (
                summary.total,
                summary.enabled,
                summary.disabled,
                summary.degraded,
                summary.unchecked
            ),
            (3, 1, 1, 1, 0)
        );
        assert_eq!(summary.circuits_open, ["a".to_string()]);
        assert_eq!(summary.unreadable.len(), 1);
    }
}
