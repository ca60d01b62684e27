//! `GET /v1/stats`: the tenant's routing (calls and share per agent), the registry's health,
//! what was learned and its running workflows, in one answer; for the operator also the
//! depth of every queue and dead-letter queue, which are the deployment's, not a tenant's.
//!
//! Reads: the registry (one query), then at once the agents' circuits (one batch), their
//! learned stats (one query per agent, on the `STATS#` keys only), the running-workflow count
//! (the `running` index, under the tenant's own key) and, for the operator, the queues (one
//! `GetQueueAttributes` each, and a peek at each non-empty dead-letter queue). Nothing is
//! cached: it is a view.

use baton_chain::queue::QueueDepth;
use baton_chain::store::{AgentRegistry, LearningStore, RoutingState, StatsStore};
use baton_types::clock::{now_ms, rfc3339};
use baton_types::ids::AgentName;
use baton_types::registry::HealthSummary;
use baton_types::stats::{learning_summary, routing_summary, LearningSummary, RoutingSummary};
use lambda_http::{Body, Response};
use serde::Serialize;

use crate::error::{json_response, ApiError};
use crate::identity;
use crate::routes::Call;
use crate::timing::timed;
use crate::Api;

/// The body of `GET /v1/stats`.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    /// When the figures were read (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub as_of: String,
    pub routing: RoutingSummary,
    pub health: HealthSummary,
    pub learning: LearningSummary,
    /// The route and execute queues of each band, the learn queue, then the dead-letter
    /// queues: the deployment's, so only for the operator (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<QueueDepth>>,
    pub workflows: WorkflowCounts,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowCounts {
    /// The tenant's, submitted and not finished yet (paused ones included; turns' not).
    pub running: u64,
}

/// Routing, health and learning summaries and the tenant's running workflows; with the
/// operator's scope, every queue's depth too.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/stats", tag = "observe",
    responses((status = 200, body = Stats))))]
pub async fn stats<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + RoutingState + LearningStore + StatsStore,
{
    let tenant = &call.tenant()?;
    let settings = &api.settings;
    let operator = identity::has_scope(
        &settings.tenant_source,
        call.request,
        &settings.operator_scope,
    );
    let now = now_ms();
    let list = timed("store", api.store.agent_list(tenant)).await?;
    let names: Vec<AgentName> = list.agents.iter().map(|a| a.name.clone()).collect();
    let reads = async {
        futures::try_join!(
            crate::agents::health_of(api, tenant, &list, now),
            async { Ok::<_, ApiError>(api.store.learned_stats(tenant, &names).await?) },
            async { Ok::<_, ApiError>(api.store.running_workflows(tenant).await?) },
        )
    };
    let queues = async {
        match &api.queue_stats {
            Some(queues) if operator => queues
                .queue_depths(now)
                .await
                .map(Some)
                .map_err(|e| ApiError::Unavailable(e.to_string())),
            _ => Ok(None),
        }
    };
    let (read, queues) = futures::join!(timed("store", reads), timed("queues", queues));
    let (health, records, running): (HealthSummary, _, u64) = read?;
    Ok(json_response(
        200,
        &Stats {
            as_of: rfc3339(now),
            routing: routing_summary(&names, &records),
            health,
            learning: learning_summary(&records),
            queues: queues?,
            workflows: WorkflowCounts { running },
        },
    ))
}
