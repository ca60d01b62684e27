//! The HTTP adapter of the health prober port: a GET of the agent's health path with a short
//! time-out, no payload, no redirects, and the same endpoint guard as agent calls
//! ([`crate::invoker::guard`]).

use std::time::Instant;

use async_trait::async_trait;

use crate::invoker::guard;
use baton_types::endpoint::{check_url, EndpointPolicy};
use baton_types::health::ProbeResult;

use baton_chain::prober::{HealthProber, PROBE_TIMEOUT};

#[derive(Clone, Debug)]
pub struct HttpHealthProber {
    client: reqwest::Client,
    policy: EndpointPolicy,
}

impl HttpHealthProber {
    /// A prober that reaches only the endpoints `policy` allows.
    pub fn new(policy: &EndpointPolicy) -> Result<Self, reqwest::Error> {
        let client = guard::guarded_builder(policy)
            .timeout(PROBE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .user_agent(concat!("baton-health/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpHealthProber {
            client,
            policy: policy.clone(),
        })
    }
}

#[async_trait]
impl HealthProber for HttpHealthProber {
    async fn probe(&self, url: &str) -> ProbeResult {
        let refused = |refusal: &dyn std::fmt::Display| ProbeResult::Failed {
            detail: format!("the health check's URL is refused: {refusal}"),
        };
        // A literal address never reaches the guard's resolver: check the URL itself.
        if let Err(refusal) = check_url(url, &self.policy) {
            return refused(&refusal);
        }
        let started = Instant::now();
        match self.client.get(url).send().await {
            Ok(response) if response.status().is_success() => ProbeResult::Answered {
                latency_ms: started.elapsed().as_millis() as u64,
            },
            Ok(response) => ProbeResult::Failed {
                detail: format!(
                    "the health check answered HTTP {}",
                    response.status().as_u16()
                ),
            },
            Err(e) => match guard::refusal_of(&e) {
                Some(refusal) => refused(refusal),
                None if e.is_timeout() => ProbeResult::Failed {
                    detail: format!(
                        "the health check did not answer within {} ms",
                        PROBE_TIMEOUT.as_millis()
                    ),
                },
                None => ProbeResult::Failed {
                    detail: "the health check could not be reached".into(),
                },
            },
        }
    }
}
