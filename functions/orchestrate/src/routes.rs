//! The route table's machinery: finding the operation a request names, and what a handler
//! is given.
//!
//! The table itself is `ROUTES` in the crate root, written once by the `routes!` macro: the
//! same list dispatches requests and (under the `openapi` feature) lists the operations the
//! document describes, each from the `#[utoipa::path]` on its handler. A path that matches a
//! route under another method answers 405 with the methods it has; one that matches none, 404.

use lambda_http::{Request, RequestExt};
use serde_json::{json, Value};

use crate::error::ApiError;
use baton_chain::config::TenantSource;
use baton_types::ids::TenantId;

use crate::identity;

/// One operation: its method and its path template (`{name}` is a parameter, one segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
}

impl Route {
    fn template(&self) -> impl Iterator<Item = &'static str> {
        self.path.split('/').filter(|s| !s.is_empty())
    }
}

/// A request on its way to its handler: the request, the path's parameters, and how to learn
/// whose it is.
pub struct Call<'a> {
    pub request: &'a Request,
    params: Vec<(&'static str, &'a str)>,
    tenants: &'a TenantSource,
}

impl<'a> Call<'a> {
    /// The path parameter `name` of the route (its template has it, so it is there).
    pub fn param(&self, name: &str) -> &'a str {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, value)| value)
    }

    /// The tenant the request belongs to; every route but the service's asks.
    pub fn tenant(&self) -> Result<TenantId, ApiError> {
        identity::tenant(self.tenants, self.request)
    }
}

/// The route of `routes` the request names, and the request with its path's parameters. A
/// literal segment is preferred to a parameter (`/v1/agents/health` over `/v1/agents/{name}`).
pub fn find<'a>(
    routes: &'static [Route],
    request: &'a Request,
    tenants: &'a TenantSource,
) -> Result<(&'static Route, Call<'a>), ApiError> {
    let path = request.raw_http_path();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let matches = |route: &Route| {
        let template: Vec<&str> = route.template().collect();
        template.len() == segments.len()
            && template
                .iter()
                .zip(&segments)
                .all(|(t, s)| t.starts_with('{') || t == s)
    };
    // Literal segments sort before parameters, position by position.
    let specificity =
        |route: &Route| -> Vec<bool> { route.template().map(|t| t.starts_with('{')).collect() };
    let best = routes
        .iter()
        .filter(|r| matches(r))
        .min_by_key(|r| specificity(r))
        .ok_or_else(|| ApiError::NotFound(format!("no route for {path}")))?;
    let same_path = || routes.iter().filter(|r| r.path == best.path);
    let method = request.method().as_str();
    let Some(route) = same_path().find(|r| r.method == method) else {
        let allowed: Vec<&str> = same_path().map(|r| r.method).collect();
        return Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
            allowed: allowed.join(", "),
        });
    };
    let params = route
        .template()
        .zip(&segments)
        .filter_map(|(t, s)| {
            let name = t.strip_prefix('{')?.strip_suffix('}')?;
            Some((name, *s))
        })
        .collect();
    Ok((
        route,
        Call {
            request,
            params,
            tenants,
        },
    ))
}

/// The request's body, within [`crate::MAX_BODY_BYTES`] and not empty.
pub fn body_bytes(request: &Request) -> Result<&[u8], ApiError> {
    let body: &[u8] = request.body().as_ref();
    if body.len() > crate::MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: crate::MAX_BODY_BYTES,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("the request body is empty", json!({})));
    }
    Ok(body)
}

pub fn parse_body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    let body = body_bytes(request)?;
    // Every body of this API is an object, and serde would read a struct from an array too.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(ApiError::from_json)?;
        return Err(ApiError::invalid(
            "the request body must be a JSON object, not an array",
            json!({}),
        ));
    }
    match serde_json::from_slice(body) {
        Ok(parsed) => Ok(parsed),
        // JSON Schema, and so the document, counts `3.0` as an integer: read it as 3. Only
        // when the body failed as written, so every other refusal keeps its line and column.
        Err(error) => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|mut value| whole_numbers(&mut value).then_some(value))
            .and_then(|value| serde_json::from_value(value).ok())
            .ok_or_else(|| ApiError::from_json(error)),
    }
}

/// Rewrites every number that has a fraction of zero as an integer; whether there was one.
fn whole_numbers(value: &mut Value) -> bool {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            let whole = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15);
            match whole {
                Some(f) => {
                    *value = Value::from(f as i64);
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |any, v| whole_numbers(v) | any),
        Value::Object(fields) => fields
            .values_mut()
            .fold(false, |any, v| whole_numbers(v) | any),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;

    const TABLE: &[Route] = &[
        Route {
            method: "GET",
            path: "/v1/agents/{name}",
        },
        Route {
            method: "PUT",
            path: "/v1/agents/{name}",
        },
        Route {
            method: "GET",
            path: "/v1/agents/health",
        },
    ];

    fn find_in(method: &str, path: &str) -> Result<(&'static Route, Vec<String>), ApiError> {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::Empty)
            .unwrap();
        let request = Request::from(request).with_raw_http_path(path);
        let tenants = TenantSource::Header;
        let (route, call) = find(TABLE, &request, &tenants)?;
        Ok((route, vec![call.param("name").to_string()]))
    }

    #[test]
    fn a_literal_segment_wins_over_a_parameter() {
        let (route, _) = find_in("GET", "/v1/agents/health").unwrap();
        assert_eq!(route.path, "/v1/agents/health");
        let (route, params) = find_in("PUT", "/v1/agents/writer").unwrap();
        assert_eq!((route.method, route.path), ("PUT", "/v1/agents/{name}"));
        assert_eq!(params, ["writer"]);
    }

    #[test]
    fn another_method_is_405_with_the_paths_methods_and_no_path_is_404() {
        match find_in("PUT", "/v1/agents/health") {
            Err(ApiError::MethodNotAllowed { allowed, .. }) => assert_eq!(allowed, "GET"),
            other => panic!("{:?}", other.map(|(r, _)| r)),
        }
        match find_in("DELETE", "/v1/agents/writer") {
            Err(ApiError::MethodNotAllowed { allowed, .. }) => assert_eq!(allowed, "GET, PUT"),
            other => panic!("{:?}", other.map(|(r, _)| r)),
        }
        assert!(matches!(
            find_in("GET", "/v1/agents/a/b"),
            Err(ApiError::NotFound(_))
        ));
    }
}
