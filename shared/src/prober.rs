//! The port through which the scheduled function probes agents' health, and its HTTP adapter:
//! a GET of the agent's health path with a short time-out, no payload, no redirects.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::health::ProbeResult;

/// How long a probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[async_trait]
pub trait HealthProber: Send + Sync {
    async fn probe(&self, url: &str) -> ProbeResult;
}

#[derive(Clone, Debug)]
pub struct HttpHealthProber {
    client: reqwest::Client,
}

impl HttpHealthProber {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("baton-health/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpHealthProber { client })
    }
}

#[async_trait]
impl HealthProber for HttpHealthProber {
    async fn probe(&self, url: &str) -> ProbeResult {
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
            Err(e) if e.is_timeout() => ProbeResult::Failed {
                detail: format!(
                    "the health check did not answer within {} ms",
                    PROBE_TIMEOUT.as_millis()
                ),
            },
            Err(_) => ProbeResult::Failed {
                detail: "the health check could not be reached".into(),
            },
        }
    }
}
