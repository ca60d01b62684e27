//! The tenant's routing settings: each capability's routing defaults, and the priority
//! multipliers by task type. A change is seen by the next submission (the cached config is
//! forgotten); the views read the table.

use baton_chain::store::ConfigStore;
use baton_types::names::{check_name, NameKind};
use baton_types::priority::check_multipliers;
use baton_types::routing::{CapabilityDefaults, RoutingStrategy, MAX_LATENCY_TARGET_MS};
use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::json;

use crate::bodies::CapabilityList;
use crate::error::{json_response, ApiError};
use crate::routes::{parse_body, Call};
use crate::timing::timed;
use crate::{views, Api};

/// The capabilities with routing defaults set.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/capabilities", tag = "settings",
    responses((status = 200, body = CapabilityList))))]
pub async fn list_capabilities<S: ConfigStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let config = timed("store", api.store.tenant_config(&tenant)).await?;
    let mut names: Vec<&String> = config.capabilities.keys().collect();
    names.sort();
    let capabilities = names
        .into_iter()
        .map(|name| views::capability(name, Some(&config.capability(name))))
        .collect();
    Ok(json_response(200, &CapabilityList { capabilities }))
}

/// The path's capability, if it can be one.
fn capability<'a>(call: &Call<'a>) -> Result<&'a str, ApiError> {
    let name = call.param("name");
    check_name(NameKind::Capability, name)
        .map_err(|e| ApiError::invalid(e.to_string(), json!({ "field": "capability" })))?;
    Ok(name)
}

/// A capability's routing defaults (the built-in ones if none were set).
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/capabilities/{name}",
    tag = "settings",
    params(crate::paths::CapabilityPath),
    responses((status = 200, body = crate::bodies::CapabilityView))))]
pub async fn get_capability<S: ConfigStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let name = capability(call)?;
    let config = timed("store", api.store.tenant_config(&tenant)).await?;
    let defaults = config.capabilities.get(name);
    Ok(json_response(200, &views::capability(name, defaults)))
}

/// Sets a capability's routing defaults.
#[cfg_attr(feature = "openapi", utoipa::path(put, path = "/v1/capabilities/{name}",
    tag = "settings",
    params(crate::paths::CapabilityPath),
    request_body = CapabilityDefaultsInput,
    responses(
        (status = 200, body = crate::bodies::CapabilityView),
        (status = 413, response = crate::openapi::PayloadTooLarge),
    )))]
pub async fn set_capability<S: ConfigStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let name = capability(call)?;
    let defaults = parse_body::<CapabilityDefaultsInput>(call.request)?.validate()?;
    let put = api.store.put_capability_defaults(&tenant, name, &defaults);
    timed("store", put).await?;
    api.config.forget(&tenant);
    tracing::info!(%tenant, capability = %name, "capability defaults set");
    Ok(json_response(
        200,
        &views::capability(name, Some(&defaults)),
    ))
}

/// The priority levels, multipliers and bands.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/priorities", tag = "settings",
    responses((status = 200, body = crate::bodies::PrioritiesView))))]
pub async fn get_priorities<S: ConfigStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let config = timed("store", api.store.tenant_config(&tenant)).await?;
    Ok(json_response(200, &views::priorities(&config.multipliers)))
}

/// Sets the tenant's priority multipliers by task type.
#[cfg_attr(feature = "openapi", utoipa::path(put, path = "/v1/priorities", tag = "settings",
    request_body = PrioritiesInput,
    responses(
        (status = 200, body = crate::bodies::PrioritiesView),
        (status = 413, response = crate::openapi::PayloadTooLarge),
    )))]
pub async fn set_priorities<S: ConfigStore, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = call.tenant()?;
    let input: PrioritiesInput = parse_body(call.request)?;
    check_multipliers(&input.multipliers).map_err(|(field, reason)| {
        ApiError::invalid(format!("{field}: {reason}"), json!({ "field": field }))
    })?;
    let put = api.store.put_multipliers(&tenant, &input.multipliers);
    timed("store", put).await?;
    api.config.forget(&tenant);
    tracing::info!(%tenant, "priority multipliers set");
    Ok(json_response(200, &views::priorities(&input.multipliers)))
}

/// The body of `PUT /v1/capabilities/{name}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CapabilityDefaultsInput {
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<baton_types::routing::RoutingStrategy>)
    )]
    routing: Option<String>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 600000))]
    latency_target_ms: Option<i64>,
}

impl CapabilityDefaultsInput {
    fn validate(self) -> Result<CapabilityDefaults, ApiError> {
        let routing = self
            .routing
            .as_deref()
            .map(|name| {
                RoutingStrategy::parse(name).ok_or_else(|| {
                    ApiError::invalid(
                        RoutingStrategy::unknown(name),
                        json!({ "field": "routing" }),
                    )
                })
            })
            .transpose()?;
        let latency_target_ms = self
            .latency_target_ms
            .map(|ms| {
                u64::try_from(ms)
                    .ok()
                    .filter(|ms| (1..=MAX_LATENCY_TARGET_MS).contains(ms))
                    .ok_or_else(|| {
                        ApiError::invalid(
                            format!("latency_target_ms must be between 1 and {MAX_LATENCY_TARGET_MS}, got {ms}"),
                            json!({ "field": "latency_target_ms" }),
                        )
                    })
            })
            .transpose()?;
        Ok(CapabilityDefaults {
            routing,
            latency_target_ms,
        })
    }
}

/// The body of `PUT /v1/priorities`: the tenant's multipliers by task type, over the defaults.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PrioritiesInput {
    #[cfg_attr(feature = "openapi", schema(schema_with = multipliers))]
    multipliers: std::collections::BTreeMap<String, f64>,
}

/// The multipliers as `check_multipliers` takes them: at most 200 task types of 1 to 64
/// characters, each multiplier above 0 and at most 100.
#[cfg(feature = "openapi")]
fn multipliers() -> utoipa::openapi::schema::Object {
    use baton_types::priority::{MAX_MULTIPLIER, MAX_MULTIPLIERS};
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let multiplier = ObjectBuilder::new()
        .schema_type(Type::Number)
        .exclusive_minimum(Some(0.0))
        .maximum(Some(MAX_MULTIPLIER));
    let task_type = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(task_type))
        .additional_properties(Some(AdditionalProperties::RefOr(multiplier.into())))
        .max_properties(Some(MAX_MULTIPLIERS))
        .build()
}
