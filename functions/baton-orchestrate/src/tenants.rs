//! Quotas as tenants and the operator see them: `GET /v1/quotas` (the caller's own, with what
//! it uses), and the operator's `GET/PUT /v1/tenants/{id}/quotas`. A caller without the
//! operator's scope gets `403` from the operator routes whatever the id, so they tell nobody
//! which tenants exist.

use baton_chain::store::{AdmissionStore, AgentRegistry, ConfigStore};
use baton_types::names::{check_name, NameKind};
use baton_types::quota::{QuotaOverrides, Quotas};
use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::json;

use crate::error::{json_response, ApiError};
use crate::timing::timed;
use crate::{allow_method, identity, parse_body, Api};

/// A tenant's quotas in effect, what the operator set, and what it uses now.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaView {
    pub tenant: String,
    /// In effect: the operator's over the deployment's defaults.
    pub quotas: Quotas,
    /// What the operator set for this tenant (absent fields: the defaults).
    pub overrides: QuotaOverrides,
    pub usage: QuotaUsage,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaUsage {
    pub agents: u64,
    /// Submitted and unfinished, as the index shows them (a moment behind).
    pub running_workflows: u64,
}

/// `GET /v1/quotas`.
pub async fn own<S, Q>(
    api: &Api<S, Q>,
    tenant: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError>
where
    S: ConfigStore + AgentRegistry + AdmissionStore,
{
    allow_method(request, &[Method::GET])?;
    Ok(json_response(200, &view(api, tenant).await?))
}

/// `/v1/tenants/{id}/quotas`, for the operator only.
pub async fn operator<S, Q>(
    api: &Api<S, Q>,
    request: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError>
where
    S: ConfigStore + AgentRegistry + AdmissionStore,
{
    allow_method(request, &[Method::GET, Method::PUT])?;
    let settings = &api.settings;
    if !identity::has_scope(&settings.tenant_source, request, &settings.operator_scope) {
        return Err(ApiError::Forbidden(format!(
            "tenants' quotas are the operator's: this needs the `{}` scope",
            settings.operator_scope
        )));
    }
    check_name(NameKind::Tenant, id)
        .map_err(|e| ApiError::invalid(e.to_string(), json!({ "parameter": "id" })))?;
    if request.method() == Method::PUT {
        let overrides: QuotaOverrides = parse_body(request)?;
        overrides.check().map_err(|(field, reason)| {
            ApiError::invalid(format!("{field}: {reason}"), json!({ "field": field }))
        })?;
        timed("store", api.store.put_quotas(id, &overrides)).await?;
        api.config.forget(id);
        tracing::info!(tenant = %id, ?overrides, "quotas set by the operator");
    }
    Ok(json_response(200, &view(api, id).await?))
}

async fn view<S, Q>(api: &Api<S, Q>, tenant: &str) -> Result<QuotaView, ApiError>
where
    S: ConfigStore + AgentRegistry + AdmissionStore,
{
    let (config, list, running) = futures::try_join!(
        async { Ok::<_, ApiError>(api.store.tenant_config(tenant).await?) },
        async { Ok::<_, ApiError>(api.store.agent_list(tenant).await?) },
        async { Ok::<_, ApiError>(api.store.running_count(tenant, u32::MAX - 1).await?) },
    )?;
    Ok(QuotaView {
        tenant: tenant.to_string(),
        quotas: config.quotas.over(&api.settings.quotas),
        overrides: config.quotas,
        usage: QuotaUsage {
            agents: (list.agents.len() + list.unreadable.len()) as u64,
            running_workflows: running,
        },
    })
}
