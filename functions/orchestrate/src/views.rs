//! How stored records are shown by the API.

use baton_types::agent::{Agent, AgentTarget};
use baton_types::circuit::Circuit;
use baton_types::clock::rfc3339;
use baton_types::ids::TenantId;
use baton_types::priority::{Band, Multipliers, Priority};
use baton_types::resources::AgentLoad;
use baton_types::routing::CapabilityDefaults;
use baton_types::tenancy::TenancyPolicy;
use std::collections::BTreeMap;

use crate::bodies::{
    AgentView, BandStart, Bands, CapabilityView, CircuitView, HealthView, Levels, PrioritiesView,
};

/// What an `api_key` that is not a reference in the tenant's namespace shows as: a key pasted
/// into a registration stored before references were checked is never shown back.
pub const HIDDEN_API_KEY: &str = "(hidden: not a secret reference of this tenant; set one)";

/// The agent's target as shown to `tenant`: an `api_key` outside its namespace is hidden.
fn shown_target(agent: &Agent, tenant: &TenantId, tenancy: &TenancyPolicy) -> AgentTarget {
    let mut target = agent.target.clone();
    if let AgentTarget::Openai(openai) = &mut target {
        if let Some(reference) = &openai.api_key {
            if tenancy.check_secret(tenant, reference).is_err() {
                openai.api_key = Some(HIDDEN_API_KEY.into());
            }
        }
    }
    target
}

/// An agent with its health, circuit (absent: closed, no recent failure) and the calls in
/// flight to it (absent: none counted), as `tenant` sees it.
pub fn agent(
    agent: &Agent,
    (tenant, tenancy): (&TenantId, &TenancyPolicy),
    circuit: Option<&Circuit>,
    load: Option<&AgentLoad>,
    now_ms: i64,
) -> AgentView {
    let load = load.cloned().unwrap_or_default();
    let breaker = agent.breaker();
    let closed = Circuit::default();
    let circuit = circuit.unwrap_or(&closed);
    let view = AgentView {
        name: agent.name.to_string(),
        kind: agent.kind(),
        endpoint: None,
        function: None,
        base_url: None,
        model: None,
        model_id: None,
        system_prompt: None,
        parameters: None,
        api_key: None,
        inference: None,
        capabilities: agent.capabilities.clone(),
        category: agent.category.clone(),
        description: agent.description.clone(),
        requires: agent.requires.clone(),
        timeout_ms: agent.timeout_ms,
        enabled: agent.enabled,
        version: agent.version,
        retry: agent.retry.clone(),
        health_check: agent.health_check.clone(),
        circuit_breaker: breaker,
        weight: agent.weight(),
        max_concurrency: agent.max_concurrency,
        resources: agent.resources.clone(),
        in_flight: load.in_flight,
        resources_in_use: load.resources_in_use,
        health: agent.health.as_ref().map(|h| HealthView {
            status: h.status,
            checked_at: rfc3339(h.checked_at_ms),
            consecutive_failures: h.consecutive_failures,
            detail: h.detail.clone(),
        }),
        circuit: CircuitView {
            state: circuit.state(now_ms, &breaker),
            failure_rate: circuit.failure_rate(),
            consecutive_failures: circuit.consecutive_failures,
            opened_at: circuit.opened_at_ms.filter(|_| circuit.open).map(rfc3339),
            probe_out: circuit.probe.as_ref().is_some_and(|p| p.until_ms >= now_ms),
        },
        created_at: rfc3339(agent.created_at_ms),
        updated_at: rfc3339(agent.updated_at_ms),
    };
    with_target(view, shown_target(agent, tenant, tenancy))
}

/// The view with the fields of the agent's kind set.
fn with_target(view: AgentView, target: AgentTarget) -> AgentView {
    match target {
        AgentTarget::Http { endpoint } => AgentView {
            endpoint: Some(endpoint),
            ..view
        },
        AgentTarget::Lambda { function } => AgentView {
            function: Some(function),
            ..view
        },
        AgentTarget::Openai(openai) => AgentView {
            base_url: Some(openai.base_url),
            model: Some(openai.model),
            system_prompt: openai.system_prompt,
            parameters: openai.parameters,
            api_key: openai.api_key,
            ..view
        },
        AgentTarget::Bedrock(bedrock) => AgentView {
            model_id: Some(bedrock.model_id),
            system_prompt: bedrock.system_prompt,
            inference: bedrock.inference,
            ..view
        },
    }
}

/// A capability's routing defaults (`defaults` absent: nothing configured).
pub fn capability(name: &str, defaults: Option<&CapabilityDefaults>) -> CapabilityView {
    let configured = defaults.cloned().unwrap_or_default();
    CapabilityView {
        capability: name.to_string(),
        routing: configured.routing.unwrap_or_default(),
        latency_target_ms: configured.latency_target_ms,
        configured: defaults.is_some(),
    }
}

/// The priority levels, the tenant's multipliers over the defaults, and the bands.
pub fn priorities(own: &BTreeMap<String, f64>) -> PrioritiesView {
    let from = |score| BandStart { from_score: score };
    PrioritiesView {
        levels: Levels {
            critical: Priority::Critical.level(),
            high: Priority::High.level(),
            normal: Priority::Normal.level(),
            low: Priority::Low.level(),
        },
        multipliers: Multipliers::with(own).0,
        default_multiplier: 1.0,
        bands: Bands {
            urgent: from(Band::URGENT_FROM),
            high: from(Band::HIGH_FROM),
            standard: from(0.0),
        },
    }
}
