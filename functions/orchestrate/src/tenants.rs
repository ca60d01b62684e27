//! Quotas as tenants and the operator see them: `GET /v1/quotas` (the caller's own, with what
//! it uses), and the operator's `GET/PUT /v1/tenants/{id}/quotas`. A caller without the
//! operator's scope gets `403` from the operator routes whatever the id, so they tell nobody
//! which tenants exist.

use baton_chain::store::{AdmissionStore, AgentRegistry, ConfigStore};
use baton_types::ids::TenantId;
use baton_types::quota::{QuotaOverrides, Quotas};
use lambda_http::{Body, Response};
use serde::Serialize;
use serde_json::json;

use crate::error::{json_response, ApiError};
use crate::routes::{parse_body, Call};
use crate::timing::timed;
use crate::{identity, Api};

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

/// The tenant's quotas in effect, and what it uses now.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/quotas", tag = "tenancy",
    responses((status = 200, body = QuotaView))))]
pub async fn own_quotas<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<Response<Body>, ApiError>
where
    S: ConfigStore + AgentRegistry + AdmissionStore,
{
    let tenant = call.tenant()?;
    Ok(json_response(200, &view(api, &tenant).await?))
}

/// A tenant's quotas (the operator's scope only).
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/tenants/{id}/quotas",
    tag = "tenancy",
    params(crate::paths::TenantPath),
    responses(
        (status = 200, body = QuotaView),
        (status = 403, response = crate::openapi::Forbidden),
    )))]
pub async fn get_tenant_quotas<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: ConfigStore + AgentRegistry + AdmissionStore,
{
    let id = &operators_tenant(api, call)?;
    Ok(json_response(200, &view(api, id).await?))
}

/// Sets a tenant's quotas over the deployment's defaults (the operator's scope only); each
/// field left out keeps the default.
#[cfg_attr(feature = "openapi", utoipa::path(put, path = "/v1/tenants/{id}/quotas",
    tag = "tenancy",
    params(crate::paths::TenantPath),
    request_body(content = QuotaOverrides,
        example = json!({ "tasks_per_second": 20, "running_workflows": 50 })),
    responses(
        (status = 200, body = QuotaView),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 413, response = crate::openapi::PayloadTooLarge),
    )))]
pub async fn set_tenant_quotas<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: ConfigStore + AgentRegistry + AdmissionStore,
{
    let id = &operators_tenant(api, call)?;
    let overrides: QuotaOverrides = parse_body(call.request)?;
    overrides.check().map_err(|(field, reason)| {
        ApiError::invalid(format!("{field}: {reason}"), json!({ "field": field }))
    })?;
    timed("store", api.store.put_quotas(id, &overrides)).await?;
    api.config.forget(id);
    tracing::info!(tenant = %id, ?overrides, "quotas set by the operator");
    Ok(json_response(200, &view(api, id).await?))
}

/// The tenant the operator's route names, once the caller is known to be the operator: the
/// scope is checked before the id, so a refusal is the same for every id.
fn operators_tenant<S, Q>(api: &Api<S, Q>, call: &Call<'_>) -> Result<TenantId, ApiError> {
    // The operator acts across tenants, but still authenticates as one.
    call.tenant()?;
    let settings = &api.settings;
    if !identity::has_scope(
        &settings.tenant_source,
        call.request,
        &settings.operator_scope,
    ) {
        return Err(ApiError::Forbidden(format!(
            "tenants' quotas are the operator's: this needs the `{}` scope",
            settings.operator_scope
        )));
    }
    TenantId::parse(call.param("id"))
        .map_err(|e| ApiError::invalid(e.to_string(), json!({ "parameter": "id" })))
}

async fn view<S, Q>(api: &Api<S, Q>, tenant: &TenantId) -> Result<QuotaView, ApiError>
where
    S: ConfigStore + AgentRegistry + AdmissionStore,
{
    let (config, list, running) = futures::try_join!(
        async { Ok::<_, ApiError>(api.store.tenant_config(tenant).await?) },
        async { Ok::<_, ApiError>(api.store.agent_list(tenant).await?) },
        async { Ok::<_, ApiError>(api.store.running_count(tenant, u32::MAX - 1).await?) },
    )?;
    Ok(QuotaView {
        tenant: tenant.into(),
        quotas: config.quotas.over(&api.settings.quotas),
        overrides: config.quotas,
        usage: QuotaUsage {
            agents: (list.agents.len() + list.unreadable.len()) as u64,
            running_workflows: running,
        },
    })
}
