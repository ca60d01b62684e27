//! `/v1/secrets`: tenants keep their agents' API keys without AWS access. A value goes to
//! Secrets Manager as `{secret prefix}{tenant}/{name}` and nowhere else: it is never
//! answered, logged or stored on an item, and a malformed body is refused without quoting it.
//! An `openai` agent names the secret by its `reference` (the full name) in `api_key`.

use baton_aws::vault::{
    SecretMeta, SecretWrite, VaultError, MAX_SECRETS_PER_TENANT, MAX_SECRET_BYTES,
};
use baton_chain::store::{AgentRegistry, TenantCounters};
use baton_types::agent::AgentTarget;
use baton_types::clock::{now_ms, rfc3339};
use baton_types::ids::TenantId;
use baton_types::names::{check_name, NameKind};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{json_response, ApiError};
use crate::routes::Call;
use crate::timing::timed;
use crate::Api;

/// A secret as the API shows it: never its value.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretView {
    /// The name under the tenant's namespace, as in the path.
    pub name: String,
    /// What an agent's `api_key` names to use it.
    pub reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub updated_at: Option<String>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretList {
    /// In name order; at most 50 (a tenant's limit).
    pub secrets: Vec<SecretView>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretDeleted {
    pub name: String,
    pub status: String,
}

/// The body of `PUT /v1/secrets/{name}`.
#[derive(Debug, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Parsed by hand (see `value_of`); the type describes the body.
pub struct SecretInput {
    /// The secret's text: an API key, or JSON with an `api_key` field. 1 to 65,536 bytes.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 65536))]
    pub value: String,
}

/// The path's secret name: one that cannot be a secret's is a bad one to create, and one that
/// exists nowhere to read or delete.
fn secret_name<'a>(call: &Call<'a>, creating: bool) -> Result<&'a str, ApiError> {
    let name = call.param("name");
    check_name(NameKind::Agent, name).map_err(|e| {
        if creating {
            ApiError::invalid(e.to_string(), json!({ "parameter": "name" }))
        } else {
            not_found(name)
        }
    })?;
    Ok(name)
}

/// The counter of a tenant's secrets (see `TenantCounters`).
const SECRETS_COUNTER: &str = "secrets";

/// A place given back; a failure only leaves the count high until the next delete.
async fn give_place_back<S: TenantCounters, Q>(api: &Api<S, Q>, tenant: &TenantId) {
    if let Err(error) = api.store.give_place(tenant, SECRETS_COUNTER).await {
        tracing::warn!(%tenant, %error, "a secret's place was not given back");
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("secret `{name}` does not exist"))
}

fn vault_error(error: VaultError) -> ApiError {
    match error {
        VaultError::Conflict(why) => ApiError::Refused {
            status: 409,
            code: "conflict",
            message: format!("the secret cannot be written now: {why}; try again later"),
            details: json!({}),
        },
        VaultError::Service(cause) => ApiError::Unavailable(cause),
    }
}

fn vault<S, Q>(api: &Api<S, Q>) -> Result<&dyn baton_aws::vault::SecretVault, ApiError> {
    api.vault
        .as_deref()
        .ok_or_else(|| ApiError::Unavailable("no secret store is configured".into()))
}

fn view(api_root: &str, meta: &SecretMeta) -> SecretView {
    SecretView {
        name: meta
            .name
            .strip_prefix(api_root)
            .unwrap_or(&meta.name)
            .to_string(),
        reference: meta.name.clone(),
        created_at: meta.created_at_ms.map(rfc3339),
        updated_at: meta.updated_at_ms.map(rfc3339),
    }
}

/// The value in a body, or a refusal that never quotes what was sent.
fn value_of(request: &Request) -> Result<String, ApiError> {
    let bytes = crate::routes::body_bytes(request)?;
    let refused = |why: &str| {
        ApiError::invalid(
            format!("the body must be {{\"value\": \"<1 to {MAX_SECRET_BYTES} bytes>\"}}: {why}"),
            json!({ "field": "value" }),
        )
    };
    let body: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson {
        // serde's message may quote the body: keep only where it broke.
        message: "the body is not valid JSON".into(),
        line: e.line(),
        column: e.column(),
    })?;
    let Value::Object(fields) = body else {
        return Err(refused("it is not a JSON object"));
    };
    // A field's name could be the key itself, pasted in the wrong place: never quoted.
    if fields.keys().any(|k| k != "value") {
        return Err(refused("it has a field other than `value`"));
    }
    match fields.get("value") {
        Some(Value::String(value)) if !value.is_empty() && value.len() <= MAX_SECRET_BYTES => {
            Ok(value.clone())
        }
        Some(Value::String(_)) => Err(refused("the value is empty or too long")),
        Some(_) => Err(refused("the value is not a string")),
        None => Err(refused("`value` is missing")),
    }
}

/// The tenant's secrets: names and dates, never values.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/secrets", tag = "tenancy",
    responses((status = 200, body = SecretList))))]
pub async fn list_secrets<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let root = api.settings.tenancy.namespaces.secret_root(tenant);
    let secrets = timed("secrets", vault(api)?.list(&root, MAX_SECRETS_PER_TENANT))
        .await
        .map_err(vault_error)?;
    let secrets = secrets.iter().map(|m| view(&root, m)).collect();
    Ok(json_response(200, &SecretList { secrets }))
}

/// One secret's name, reference and dates; never its value.
#[cfg_attr(feature = "openapi", utoipa::path(get, path = "/v1/secrets/{name}", tag = "tenancy",
    params(crate::paths::NamePath),
    responses(
        (status = 200, body = SecretView),
        (status = 404, response = crate::openapi::NotFound),
    )))]
pub async fn get_secret<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let name = secret_name(call, false)?;
    let namespaces = &api.settings.tenancy.namespaces;
    let meta = timed(
        "secrets",
        vault(api)?.describe(&namespaces.secret_name(tenant, name)),
    )
    .await
    .map_err(vault_error)?
    .ok_or_else(|| not_found(name))?;
    Ok(json_response(
        200,
        &view(&namespaces.secret_root(tenant), &meta),
    ))
}

/// Stores a value as the tenant's secret `name` (an agent's `api_key` then names its
/// `reference`). The value is write-only: no answer, log or item ever holds it.
#[cfg_attr(feature = "openapi", utoipa::path(put, path = "/v1/secrets/{name}", tag = "tenancy",
    params(crate::paths::NamePath),
    request_body(content = SecretInput, example = json!({ "value": "sk-..." })),
    responses(
        (status = 200, description = "Its value replaced", body = SecretView),
        (status = 201, description = "Created", body = SecretView, headers(("Location" = String))),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
    )))]
pub async fn put_secret<S: TenantCounters, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let tenant = &call.tenant()?;
    let name = secret_name(call, true)?;
    let value = value_of(call.request)?;
    let namespaces = &api.settings.tenancy.namespaces;
    let full = namespaces.secret_name(tenant, name);
    let root = namespaces.secret_root(tenant);
    let vault = vault(api)?;
    let exists = timed("secrets", vault.describe(&full))
        .await
        .map_err(vault_error)?
        .is_some();
    if !exists {
        // A place under the limit is taken before the secret is made, so racing writes
        // cannot pass it; the listing only starts the count.
        let kept = timed("secrets", vault.list(&root, MAX_SECRETS_PER_TENANT))
            .await
            .map_err(vault_error)?;
        let limit = MAX_SECRETS_PER_TENANT as u64;
        let take = api
            .store
            .take_place(tenant, SECRETS_COUNTER, kept.len() as u64, limit);
        if !timed("store", take).await? {
            return Err(crate::admission::quota_exceeded(
                "secrets",
                MAX_SECRETS_PER_TENANT,
                format!(
                    "a tenant keeps at most {MAX_SECRETS_PER_TENANT} secrets; delete one first"
                ),
                None,
            ));
        }
    }
    let written = match timed("secrets", vault.put(tenant, &full, &value)).await {
        Ok(written) => written,
        Err(error) => {
            if !exists {
                give_place_back(api, tenant).await;
            }
            return Err(vault_error(error));
        }
    };
    if exists && written == SecretWrite::Created {
        // Deleted and made again between the look and the write: it took no place.
        let take = api.store.take_place(tenant, SECRETS_COUNTER, 0, u64::MAX);
        timed("store", take).await?;
    }
    drop(value);
    tracing::info!(%tenant, secret = %name, ?written, "secret written");
    let now = rfc3339(now_ms());
    let body = SecretView {
        name: name.to_string(),
        reference: full,
        created_at: (written == SecretWrite::Created).then(|| now.clone()),
        updated_at: Some(now),
    };
    let status = match written {
        SecretWrite::Created => 201,
        SecretWrite::Updated => 200,
    };
    let mut response = json_response(status, &body);
    if status == 201 {
        if let Ok(location) = format!("/v1/secrets/{name}").parse() {
            response.headers_mut().insert("location", location);
        }
    }
    Ok(response)
}

/// Deletes a secret at once; refused while one of the tenant's agents names it.
// An agent whose key went away would fail every call, so the agents that name it are listed
// instead (409, as the registry's guard).
#[cfg_attr(feature = "openapi", utoipa::path(delete, path = "/v1/secrets/{name}", tag = "tenancy",
    params(crate::paths::NamePath),
    responses(
        (status = 200, body = SecretDeleted),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )))]
pub async fn delete_secret<S, Q>(
    api: &Api<S, Q>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError>
where
    S: AgentRegistry + TenantCounters,
{
    let tenant = &call.tenant()?;
    let name = secret_name(call, false)?;
    let full = api.settings.tenancy.namespaces.secret_name(tenant, name);
    let vault = vault(api)?;
    if timed("secrets", vault.describe(&full))
        .await
        .map_err(vault_error)?
        .is_none()
    {
        return Err(not_found(name));
    }
    let agents = timed("store", api.store.agents(tenant)).await?;
    let mut users: Vec<&str> = agents
        .iter()
        .filter(|agent| match &agent.target {
            AgentTarget::Openai(target) => target
                .api_key
                .as_deref()
                .is_some_and(|key| names_secret(key, &full)),
            _ => false,
        })
        .map(|agent| agent.name.as_str())
        .collect();
    if !users.is_empty() {
        users.sort_unstable();
        return Err(ApiError::Refused {
            status: 409,
            code: "secret_in_use",
            message: format!(
                "secret `{name}` is the api_key of {}; point them elsewhere first",
                users.join(", ")
            ),
            details: json!({ "agents": users }),
        });
    }
    let deleted = timed("secrets", vault.delete(&full))
        .await
        .map_err(vault_error)?;
    if deleted {
        give_place_back(api, tenant).await;
    }
    tracing::info!(%tenant, secret = %name, "secret deleted");
    Ok(json_response(
        200,
        &SecretDeleted {
            name: name.to_string(),
            status: "deleted".into(),
        },
    ))
}

/// Whether an `api_key` reference names the secret `full`: by name, or by an ARN whose name
/// part is `full` with Secrets Manager's six-character suffix.
fn names_secret(reference: &str, full: &str) -> bool {
    if reference == full {
        return true;
    }
    reference
        .split_once(":secret:")
        .and_then(|(_, name)| name.strip_prefix(full))
        .is_some_and(|suffix| suffix.is_empty() || (suffix.len() == 7 && suffix.starts_with('-')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_names_a_secret_by_name_or_arn() {
        let full = "baton/acme/openai";
        assert!(names_secret(full, full));
        assert!(names_secret(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:baton/acme/openai-AbCdEf",
            full
        ));
        assert!(!names_secret("baton/acme/openai2", full));
        assert!(!names_secret(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:baton/acme/openai2-AbCdEf",
            full
        ));
    }
}
