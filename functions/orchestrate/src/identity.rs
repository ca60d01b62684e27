//! Whose request this is: the tenant, from the claims API Gateway's JWT authorizer verified,
//! or from the `X-Tenant-Id` header where the stack is configured to trust it; and whether
//! the caller is the operator, who alone may change a tenant's quotas and see the
//! deployment's own figures.
//!
//! In `jwt` mode the headers are ignored entirely: API Gateway checked the token's signature,
//! issuer, audience and expiry before this function ran, and only the claims it put in the
//! request context can name a tenant or grant the operator's scope (a `scope` the token
//! carries, or a Cognito group in `cognito:groups`). In `header` mode the API sits behind the
//! operator's own authentication (IAM-signed requests), which sets `X-Tenant-Id` and, for the
//! operator, `X-Baton-Scopes`; a request without `X-Tenant-Id` is refused.

use baton_chain::config::TenantSource;
use baton_types::ids::TenantId;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde_json::json;

use crate::ApiError;

/// The tenant a request belongs to in `header` mode.
pub const TENANT_HEADER: &str = "x-tenant-id";
/// The scopes a `header`-mode request carries, space-separated, as the proxy in front set them.
pub const SCOPES_HEADER: &str = "x-baton-scopes";
/// The local stack's own tenant (its examples are registered for it).
pub const DEFAULT_TENANT: &str = "default";
/// The claim a Cognito token lists its groups in.
const GROUPS_CLAIM: &str = "cognito:groups";

/// The request's tenant. `jwt`: a missing or unusable claim is 401, as an invalid identity.
/// `header`: a missing header is 401 too, and a malformed one 400, as a bad request.
pub fn tenant(source: &TenantSource, request: &Request) -> Result<TenantId, ApiError> {
    match source {
        TenantSource::Jwt { claim } => tenant_from_claims(request, claim),
        TenantSource::Header => tenant_from_header(request),
    }
}

/// Whether the caller holds `scope`: among the token's scopes or Cognito groups (`jwt`), or
/// in `X-Baton-Scopes` (`header`).
pub fn has_scope(source: &TenantSource, request: &Request, scope: &str) -> bool {
    match source {
        TenantSource::Jwt { .. } => {
            let Some(jwt) = verified_token(request) else {
                return false;
            };
            // API Gateway lists scopes only for routes that require some; the token's own
            // `scope` claim (space-separated, RFC 8693) is always among the claims.
            let claimed = jwt
                .claims
                .get("scope")
                .into_iter()
                .flat_map(|s| s.split_whitespace());
            let scopes = jwt
                .scopes
                .iter()
                .flatten()
                .map(String::as_str)
                .chain(claimed);
            let groups = jwt.claims.get(GROUPS_CLAIM).into_iter().flat_map(|groups| {
                // API Gateway flattens an array claim to `[a b]`; a lone group is plain text.
                groups
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .split([' ', ','])
            });
            scopes.chain(groups).any(|s| s == scope)
        }
        TenantSource::Header => request
            .headers()
            .get(SCOPES_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split_whitespace().any(|s| s == scope)),
    }
}

fn verified_token(
    request: &Request,
) -> Option<&lambda_http::aws_lambda_events::apigw::ApiGatewayRequestAuthorizerJwtDescription> {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.jwt.as_ref()),
        _ => None,
    }
}

fn tenant_from_claims(request: &Request, claim: &str) -> Result<TenantId, ApiError> {
    let claims = verified_token(request).map(|jwt| &jwt.claims);
    let Some(claims) = claims else {
        return Err(ApiError::Unauthorized(
            "the request carries no verified token: send `Authorization: Bearer <token>`".into(),
        ));
    };
    let Some(value) = claims.get(claim) else {
        return Err(ApiError::Unauthorized(format!(
            "the token has no `{claim}` claim to name its tenant"
        )));
    };
    TenantId::parse(value).map_err(|e| {
        ApiError::Unauthorized(format!("the token's `{claim}` claim is not a tenant: {e}"))
    })
}

fn tenant_from_header(request: &Request) -> Result<TenantId, ApiError> {
    let Some(value) = request.headers().get(TENANT_HEADER) else {
        return Err(ApiError::NoIdentity(
            "the request names no tenant: send `X-Tenant-Id`".into(),
        ));
    };
    // A header that is not visible ASCII is read lossily, so the error quotes what was sent.
    let text = String::from_utf8_lossy(value.as_bytes());
    TenantId::parse(&text)
        .map_err(|e| ApiError::invalid(e.to_string(), json!({ "header": TENANT_HEADER })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
    use serde_json::Value;

    fn jwt(claim: &str) -> TenantSource {
        TenantSource::Jwt {
            claim: claim.into(),
        }
    }

    /// A request as API Gateway hands it over, with `authorizer` in its request context.
    fn request(authorizer: Value, tenant_header: Option<&str>) -> Request {
        let context: ApiGatewayV2httpRequestContext = serde_json::from_value(json!({
            "accountId": "000000000000",
            "apiId": "api",
            "http": { "method": "GET", "path": "/v1/agents" },
            "requestId": "r",
            "authorizer": authorizer,
        }))
        .expect("request context");
        let mut builder = http::Request::builder().uri("/v1/agents");
        if let Some(tenant) = tenant_header {
            builder = builder.header(TENANT_HEADER, tenant);
        }
        builder
            .body(lambda_http::Body::Empty)
            .expect("request")
            .with_request_context(RequestContext::ApiGatewayV2(context))
    }

    fn claims(claims: Value) -> Value {
        json!({ "jwt": { "claims": claims, "scopes": null } })
    }

    #[test]
    fn the_operator_scope_comes_from_the_token_or_the_trusted_header() {
        let scope = "baton/operator";
        let jwt_mode = jwt("tenant_id");
        let with_scopes = json!({ "jwt": { "claims": { "tenant_id": "ops" },
                                           "scopes": ["read", scope] } });
        assert!(has_scope(&jwt_mode, &request(with_scopes, None), scope));
        let grouped =
            claims(json!({ "tenant_id": "ops", "cognito:groups": "[admins baton/operator]" }));
        assert!(has_scope(&jwt_mode, &request(grouped, None), scope));
        let claimed = claims(json!({ "tenant_id": "ops", "scope": "openid baton/operator" }));
        assert!(has_scope(&jwt_mode, &request(claimed, None), scope));
        let plain = claims(json!({ "tenant_id": "acme" }));
        assert!(!has_scope(&jwt_mode, &request(plain, None), scope));
        // The header counts only where headers are trusted.
        let mut forged = request(claims(json!({ "tenant_id": "acme" })), Some("acme"));
        forged
            .headers_mut()
            .insert(SCOPES_HEADER, scope.parse().unwrap());
        assert!(!has_scope(&jwt_mode, &forged, scope));
        assert!(has_scope(&TenantSource::Header, &forged, scope));
        assert!(!has_scope(
            &TenantSource::Header,
            &request(Value::Null, Some("acme")),
            scope
        ));
    }

    fn unauthorized(result: Result<TenantId, ApiError>) -> String {
        match result {
            Err(ApiError::Unauthorized(message)) => message,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn the_named_claim_is_the_tenant() {
        let r = request(claims(json!({ "sub": "u1", "tenant_id": "acme" })), None);
        assert_eq!(tenant(&jwt("tenant_id"), &r).unwrap(), "acme");
        let r = request(claims(json!({ "custom:tenant_id": "globex" })), None);
        assert_eq!(tenant(&jwt("custom:tenant_id"), &r).unwrap(), "globex");
    }

    #[test]
    fn the_header_is_ignored_when_tenants_come_from_tokens() {
        let r = request(claims(json!({ "tenant_id": "acme" })), Some("globex"));
        assert_eq!(tenant(&jwt("tenant_id"), &r).unwrap(), "acme");
        let r = request(Value::Null, Some("globex"));
        let message = unauthorized(tenant(&jwt("tenant_id"), &r));
        assert!(message.contains("Bearer"), "{message}");
    }

    #[test]
    fn a_token_without_a_usable_claim_is_unauthorized() {
        let r = request(claims(json!({ "sub": "u1" })), None);
        let message = unauthorized(tenant(&jwt("tenant_id"), &r));
        assert!(message.contains("`tenant_id`"), "{message}");
        for bad in ["", "has space", "a/b", &"x".repeat(300)] {
            let r = request(claims(json!({ "tenant_id": bad })), None);
            unauthorized(tenant(&jwt("tenant_id"), &r));
        }
    }

    #[test]
    fn a_request_without_an_authorizer_context_is_unauthorized() {
        let plain = http::Request::builder()
            .uri("/v1/agents")
            .body(lambda_http::Body::Empty)
            .unwrap();
        unauthorized(tenant(&jwt("tenant_id"), &plain));
        let lambda_authorizer = json!({ "lambda": { "tenant_id": "acme" } });
        unauthorized(tenant(&jwt("tenant_id"), &request(lambda_authorizer, None)));
    }

    #[test]
    fn header_mode_takes_the_header_and_refuses_a_request_without_one() {
        let r = request(Value::Null, Some("globex"));
        assert_eq!(tenant(&TenantSource::Header, &r).unwrap(), "globex");
        let r = request(claims(json!({ "tenant_id": "acme" })), None);
        assert!(matches!(
            tenant(&TenantSource::Header, &r),
            Err(ApiError::NoIdentity(_))
        ));
        let r = request(Value::Null, Some("not a tenant"));
        match tenant(&TenantSource::Header, &r) {
            Err(ApiError::InvalidRequest { details, .. }) => {
                assert_eq!(details, json!({ "header": TENANT_HEADER }))
            }
            other => panic!("expected 400, got {other:?}"),
        }
    }
}
