//! What Lambda would bill the stack's functions: each function's invocations and their
//! durations, as the handlers ran them here. Lambda bills each invocation's duration rounded
//! up to the millisecond, so that is what is added up.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One function's invocations so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Invoked {
    pub count: u64,
    /// The sum of each invocation's duration rounded up to the millisecond.
    pub billed_ms: u64,
}

/// Shared by every handler of a stack; cloning shares the counts.
#[derive(Debug, Clone, Default)]
pub struct Invocations(Arc<Mutex<BTreeMap<&'static str, Invoked>>>);

impl Invocations {
    /// Runs one invocation of `function` and records its duration (also when it returns an
    /// error; not when its future is dropped, as a killed handler's is).
    pub async fn time<T>(&self, function: &'static str, invocation: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let output = invocation.await;
        let billed_ms = started.elapsed().as_micros().div_ceil(1000) as u64;
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let invoked = counts.entry(function).or_default();
        invoked.count += 1;
        invoked.billed_ms += billed_ms.max(1);
        output
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, Invoked> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn reset(&self) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_each_invocation_and_rounds_its_duration_up() {
        let invocations = Invocations::default();
        assert_eq!(invocations.time("route", async { 7 }).await, 7);
        invocations.time("route", async {}).await;
        invocations.time("learn", async {}).await;
        let counts = invocations.snapshot();
        assert_eq!(counts["route"].count, 2);
        assert!(
            counts["route"].billed_ms >= 2,
            "at least a millisecond each"
        );
        assert_eq!(counts["learn"].count, 1);
        invocations.reset();
        assert!(invocations.snapshot().is_empty());
    }
}
