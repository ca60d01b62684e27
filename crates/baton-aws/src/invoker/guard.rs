//! The I/O half of endpoint safety ([`baton_types::endpoint`]): resolving an agent's host
//! and refusing it when any address it resolves to is refused, at registration and at every
//! call, so a DNS answer that changes after registration (rebinding) cannot reach a refused
//! address.
//!
//! Every client that calls an agent-supplied URL is built by [`guarded_builder`]:
//! - its DNS resolver refuses a name whose addresses are not all allowed;
//! - it never follows a redirect (a 3xx answer is the agent's answer, a failure);
//! - it ignores proxy settings, since a proxy would make the connection, not the guard.
//!
//! The resolver is not consulted for a host written as an address, so callers also run the
//! pure [`check_url`] on each URL right before the call.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use baton_types::endpoint::{check_address, check_url, EndpointError, EndpointPolicy};
use baton_types::outcome::{FailureKind, TaskFailure};

/// How long a name may take to resolve before it counts as unresolvable.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to an agent may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns a host name into its addresses.
#[async_trait]
pub trait HostResolver: Send + Sync {
    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>>;
}

/// The system's resolver (`getaddrinfo`), bounded by [`RESOLVE_TIMEOUT`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl HostResolver for SystemResolver {
    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let lookup = tokio::net::lookup_host((host, 0));
        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(addrs) => Ok(addrs?.map(|a| a.ip()).collect()),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs()),
            )),
        }
    }
}

/// Resolves `host` and checks every address; all must be allowed, since the connection may
/// use any of them.
pub async fn allowed_addresses(
    host: &str,
    policy: &EndpointPolicy,
    resolver: &dyn HostResolver,
) -> Result<Vec<IpAddr>, EndpointError> {
    let unresolvable = |reason: String| EndpointError::Unresolvable {
        host: host.into(),
        reason,
    };
    let addresses = resolver
        .resolve(host)
        .await
        .map_err(|e| unresolvable(e.to_string()))?;
    if addresses.is_empty() {
        return Err(unresolvable("it has no address".into()));
    }
    for &ip in &addresses {
        check_address(ip, policy).map_err(|refusal| EndpointError::Address {
            host: host.into(),
            ip,
            refusal,
        })?;
    }
    Ok(addresses)
}

/// Every rule for a URL about to be stored: the pure ones, then, for a host name, that it
/// resolves and that each address it resolves to is allowed.
pub async fn check_url_resolves(
    raw: &str,
    policy: &EndpointPolicy,
    resolver: &dyn HostResolver,
) -> Result<Url, EndpointError> {
    let url = check_url(raw, policy)?;
    if let Some(Host::Domain(name)) = url.host() {
        allowed_addresses(name, policy, resolver).await?;
    }
    Ok(url)
}

/// reqwest's resolver for guarded clients.
struct GuardedResolver {
    policy: Arc<EndpointPolicy>,
    resolver: Arc<dyn HostResolver>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let resolver = Arc::clone(&self.resolver);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses = allowed_addresses(&host, &policy, resolver.as_ref()).await?;
            // Port 0: reqwest puts the URL's port in.
            let addrs: Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A client builder with the guard in place: the policy's resolver, no redirects, no proxy.
pub fn guarded_builder(policy: &EndpointPolicy) -> reqwest::ClientBuilder {
    guarded_builder_with(policy, Arc::new(SystemResolver))
}

/// [`guarded_builder`] resolving through `resolver`.
pub fn guarded_builder_with(
    policy: &EndpointPolicy,
    resolver: Arc<dyn HostResolver>,
) -> reqwest::ClientBuilder {
    crate::transport::reqwest_builder()
        .dns_resolver(GuardedResolver {
            policy: Arc::new(policy.clone()),
            resolver,
        })
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
}

/// The client agents are called with: guarded, with Baton's connect time-out and user agent.
pub fn guarded_client(policy: &EndpointPolicy) -> Result<reqwest::Client, reqwest::Error> {
    guarded_builder(policy)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The guard's refusal behind a failed request, if that is why it failed.
pub fn refusal_of(err: &reqwest::Error) -> Option<&EndpointError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<EndpointError>() {
            return Some(refusal);
        }
        source = e.source();
    }
    None
}

/// A call the guard stopped. A name that does not resolve now may on the next attempt (a DNS
/// fault), so it fails as a retryable connection failure; any other refusal is final.
pub fn refused_call_failure(agent: &str, refusal: &EndpointError) -> TaskFailure {
    match refusal {
        EndpointError::Unresolvable { .. } => TaskFailure::new(
            FailureKind::Connection,
            format!("agent `{agent}` could not be reached: {refusal}"),
        ),
        _ => forbidden_failure(agent, refusal),
    }
}

/// A call the guard refused: never retried, since the same URL would be refused again.
pub fn forbidden_failure(agent: &str, refusal: &EndpointError) -> TaskFailure {
    TaskFailure::new(
        FailureKind::ForbiddenEndpoint,
        format!("agent `{agent}` was not called: its URL is refused: {refusal}"),
    )
}

/// A 3xx answer: Baton does not follow redirects, which could lead anywhere.
pub fn redirect_failure(agent: &str, status: u16, location: Option<&str>) -> TaskFailure {
    let target: String = location
        .map(|l| l.chars().take(200).collect())
        .unwrap_or_else(|| "an unnamed location".into());
    TaskFailure {
        kind: FailureKind::HttpStatus,
        message: format!(
            "agent `{agent}` answered {status} with a redirect to {target}; Baton does not \
             follow redirects"
        ),
        http_status: Some(status),
        retryable: false,
        retry_after_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Answers from a fixed table, as a DNS server under someone else's control might.
    struct FixedResolver(HashMap<&'static str, Vec<IpAddr>>);

    #[async_trait]
    impl HostResolver for FixedResolver {
        async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
            self.0
                .get(host)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        }
    }

    fn resolver() -> FixedResolver {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        FixedResolver(HashMap::from([
            ("agents.example.com", vec![ip("93.184.216.34")]),
            ("rebound.example.com", vec![ip("169.254.169.254")]),
            (
                "split.example.com",
                vec![ip("93.184.216.34"), ip("10.0.0.7")],
            ),
            ("empty.example.com", vec![]),
        ]))
    }

    #[tokio::test]
    async fn a_name_is_allowed_only_when_every_address_is() {
        let strict = EndpointPolicy::default();
        let resolver = resolver();
        let url = check_url_resolves("https://agents.example.com/run", &strict, &resolver)
            .await
            .unwrap();
        assert_eq!(url.path(), "/run");
        let err = check_url_resolves("https://rebound.example.com/", &strict, &resolver)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`rebound.example.com` resolves to 169.254.169.254, a cloud metadata service, \
             which agents may never use"
        );
        assert!(matches!(
            check_url_resolves("https://split.example.com/", &strict, &resolver).await,
            Err(EndpointError::Address { .. })
        ));
        for unknown in ["https://nowhere.example.com/", "https://empty.example.com/"] {
            assert!(matches!(
                check_url_resolves(unknown, &strict, &resolver).await,
                Err(EndpointError::Unresolvable { .. })
            ));
        }
    }

    #[tokio::test]
    async fn a_literal_address_is_checked_without_resolving() {
        let nothing = FixedResolver(HashMap::new());
        assert!(check_url_resolves(
            "https://93.184.216.34/",
            &EndpointPolicy::default(),
            &nothing
        )
        .await
        .is_ok());
        assert!(check_url_resolves(
            "http://127.0.0.1:8080/",
            &EndpointPolicy::loopback(),
            &nothing
        )
        .await
        .is_ok());
    }

    #[test]
    fn redirects_and_refusals_are_final() {
        let redirect = redirect_failure("a", 302, Some("http://169.254.169.254/"));
        assert!(!redirect.retryable);
        assert_eq!(redirect.http_status, Some(302));
        assert!(redirect.message.contains("Baton does not follow redirects"));
        let refused = forbidden_failure("a", &EndpointError::NoHost);
        assert_eq!(refused.kind, FailureKind::ForbiddenEndpoint);
        assert!(!refused.retryable);
        let dns_fault = EndpointError::Unresolvable {
            host: "agents.example.com".into(),
            reason: "timed out".into(),
        };
        let retried = refused_call_failure("a", &dns_fault);
        assert_eq!(retried.kind, FailureKind::Connection);
        assert!(retried.retryable);
        let address = EndpointError::MetadataHost {
            host: "metadata.google.internal".into(),
        };
        assert!(!refused_call_failure("a", &address).retryable);
    }
}
