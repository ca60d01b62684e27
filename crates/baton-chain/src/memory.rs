//! An in-memory store, queue and payload store: a test double of the ports, so that the
//! chain's steps and the queue-driven handlers get fast unit tests. The product never uses
//! it: it is compiled for this crate's tests and under the `memory` feature, which only the
//! function crates' dev-dependencies enable. The tests against moto (`baton-tests`) remain
//! the check of the real adapters.
//!
//! It keeps the DynamoDB adapter's contract (`baton_aws::dynamo`), not its layout: the same
//! conditional transitions keyed by (task, attempt) and claim token, the same answer to a
//! duplicate or late call, the same leases, holds, counts, releases and skips, and the same
//! recognition of a write's own earlier effect when its response was lost. Each call takes
//! one lock on the whole state, so it is atomic as the adapter's conditional write or
//! transaction is (and where the adapter makes two writes, as `release_dependent` does, the
//! second is conditioned as the adapter's is, so a repeat still meets the first's effect).
//!
//! Where it is simpler than the adapter, on purpose:
//! - one shard: every expired lease and due workflow is found on shard 0, none on the others
//!   (the indexes' shards spread load, which memory has none of);
//! - payloads stay on their items, so `stored_payload` never finds one; an item's size limit
//!   holds only when a test sets one ([`MemoryStore::refuse_outputs_over`]);
//! - no item expires: `expires_at` is kept to be read by tests, never acted on.
//!
//! Every port method is implemented; none answers with an error of its own making. Faults can
//! be injected per method ([`MemoryStore::inject`]): a request that fails, a write whose
//! response is lost, or one that the SDK sends again and that meets its own effect.

mod improvements;
mod learning;
mod registry;
mod sessions;
mod streams;
mod workflows;

pub mod fixtures;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::payload::{PayloadError, PayloadStore};
use crate::queue::{QueueError, TaskQueue};
use crate::store::StoreError;
use baton_types::ids::{SessionId, TaskId, TenantId, WorkflowId};
use baton_types::messages::{ExecuteMessage, OutcomeMessage, RouteMessage};

/// What an injected fault does to one call of a store method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request fails before it reaches the store: nothing changes.
    Fail,
    /// The write is applied but its response is lost: the caller gets an error (and SQS
    /// delivers the message again).
    LoseResponse,
    /// The write is applied, its response is lost, and the SDK sends the request again: the
    /// caller gets the answer to the second request, which meets the first one's effect.
    Retried,
}

/// One task type's patterns by (kind, subject, valid from).
type PatternIntervals = BTreeMap<(String, String, i64), baton_types::patterns::Pattern>;

/// The store's state: every table the adapter writes, by what its items are keyed on.
#[derive(Default)]
struct State {
    /// Workflows by (tenant, workflow id): the record, the tasks and the archive.
    workflows: BTreeMap<(TenantId, WorkflowId), workflows::Partition>,
    /// Sessions by (tenant, session id).
    sessions: BTreeMap<(TenantId, SessionId), sessions::SessionPartition>,
    registry: registry::Registry,
    learning: learning::Memory,
    /// Patterns by (tenant, task type), then (kind, subject, valid from).
    patterns: BTreeMap<(TenantId, String), PatternIntervals>,
    /// When each tenant's analysis is due.
    analyses: BTreeMap<TenantId, i64>,
    /// Contexts by (tenant, name).
    contexts: BTreeMap<(TenantId, String), baton_types::contexts::StoredContext>,
    /// Suggestions by tenant, then id.
    suggestions: BTreeMap<TenantId, BTreeMap<String, baton_types::suggestions::StoredSuggestion>>,
    /// Tasks' streams by (tenant, workflow, task), then each batch by its first event's number.
    streams: BTreeMap<(TenantId, WorkflowId, TaskId), StreamBatches>,
    /// Each tenant's open streams on the streaming endpoint, and when each slot lapses.
    stream_slots: BTreeMap<TenantId, BTreeMap<String, i64>>,
}

type StreamBatches = BTreeMap<u64, Vec<baton_types::stream::StreamEvent>>;

/// Faults to inject and calls made, by method name.
#[derive(Default)]
struct Hooks {
    faults: HashMap<&'static str, Vec<Fault>>,
    calls: HashMap<&'static str, u32>,
}

/// The in-memory store: every store port, over one lock.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    hooks: Mutex<Hooks>,
    /// Outputs larger than this, as stored JSON, are refused `TooLarge` (None: any fits).
    output_limit: Mutex<Option<usize>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock leaves a state still worth reading.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn injected(method: &str, what: &str) -> StoreError {
    StoreError::Request(format!("{method}: {what} (an injected fault)").into())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `times` calls of `method` (a port method's name, such as
    /// `"end_attempt"`) meet `fault`.
    pub fn inject(&self, method: &'static str, fault: Fault, times: u32) {
        let mut hooks = locked(&self.hooks);
        let queued = hooks.faults.entry(method).or_default();
        queued.extend(std::iter::repeat_n(fault, times as usize));
    }

    /// How many times `method` was called, faults included.
    pub fn calls(&self, method: &str) -> u32 {
        locked(&self.hooks).calls.get(method).copied().unwrap_or(0)
    }

    /// Refuses outputs larger than `bytes` of stored JSON as `TooLarge`, as DynamoDB refuses
    /// an item past its size limit when no bucket takes the output.
    pub fn refuse_outputs_over(&self, bytes: usize) {
        *locked(&self.output_limit) = Some(bytes);
    }

    fn output_limit(&self) -> Option<usize> {
        *locked(&self.output_limit)
    }

    /// Runs one call of `method` on the state under the lock, with its injected fault if any.
    /// `op` is the whole request: run twice, it is the SDK's retry of it.
    fn run<T>(
        &self,
        method: &'static str,
        mut op: impl FnMut(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let fault = {
            let mut hooks = locked(&self.hooks);
            *hooks.calls.entry(method).or_default() += 1;
            hooks
                .faults
                .get_mut(method)
                .filter(|queued| !queued.is_empty())
                .map(|queued| queued.remove(0))
        };
        if fault == Some(Fault::Fail) {
            return Err(injected(method, "the request failed"));
        }
        let mut state = locked(&self.state);
        let first = op(&mut state);
        match fault {
            Some(Fault::LoseResponse) => first.and(Err(injected(method, "the response was lost"))),
            Some(Fault::Retried) => op(&mut state),
            _ => first,
        }
    }
}

/// The routed, executed and learned messages a [`MemoryQueue`] was given, in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sent {
    /// Each route message with the delay it was sent with.
    pub route: Vec<(RouteMessage, Duration)>,
    pub execute: Vec<ExecuteMessage>,
    pub outcomes: Vec<OutcomeMessage>,
}

/// A task queue that keeps what was sent, for a test to look at or deliver onwards.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    sent: Mutex<Sent>,
    /// Sends that fail before anything is sent.
    failures: Mutex<u32>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `times` sends fail.
    pub fn fail_next(&self, times: u32) {
        *locked(&self.failures) += times;
    }

    /// Everything sent since the last drain, taken out of the queue.
    pub fn drain(&self) -> Sent {
        std::mem::take(&mut *locked(&self.sent))
    }

    /// Route messages sent since the last drain, with their delays, taken out of the queue.
    pub fn drain_route(&self) -> Vec<(RouteMessage, Duration)> {
        std::mem::take(&mut locked(&self.sent).route)
    }

    pub fn drain_execute(&self) -> Vec<ExecuteMessage> {
        std::mem::take(&mut locked(&self.sent).execute)
    }

    pub fn drain_outcomes(&self) -> Vec<OutcomeMessage> {
        std::mem::take(&mut locked(&self.sent).outcomes)
    }

    /// What was sent and not drained yet.
    pub fn pending(&self) -> Sent {
        locked(&self.sent).clone()
    }

    fn send(&self, record: impl FnOnce(&mut Sent)) -> Result<(), QueueError> {
        let mut failures = locked(&self.failures);
        if *failures > 0 {
            *failures -= 1;
            return Err(QueueError::Request(
                "the send failed (an injected fault)".into(),
            ));
        }
        record(&mut locked(&self.sent));
        Ok(())
    }
}

#[async_trait]
impl TaskQueue for MemoryQueue {
    async fn send_route(&self, messages: &[RouteMessage]) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        self.send(|sent| {
            sent.route
                .extend(messages.iter().map(|m| (m.clone(), Duration::ZERO)))
        })
    }

    async fn send_route_after(
        &self,
        message: &RouteMessage,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.send(|sent| sent.route.push((message.clone(), delay)))
    }

    async fn send_execute(&self, message: &ExecuteMessage) -> Result<(), QueueError> {
        self.send(|sent| sent.execute.push(message.clone()))
    }

    async fn send_outcome(&self, message: &OutcomeMessage) -> Result<(), QueueError> {
        self.send(|sent| sent.outcomes.push(message.clone()))
    }
}

/// A payload bucket in memory: objects by key, and how often each was refreshed.
#[derive(Debug, Default)]
pub struct MemoryPayloads {
    objects: Mutex<HashMap<String, (Vec<u8>, u32)>>,
}

impl MemoryPayloads {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times the object under `key` was refreshed (None: no such object).
    pub fn refreshes(&self, key: &str) -> Option<u32> {
        locked(&self.objects)
            .get(key)
            .map(|(_, refreshed)| *refreshed)
    }
}

#[async_trait]
impl PayloadStore for MemoryPayloads {
    async fn put(&self, key: &str, json: Vec<u8>) -> Result<(), PayloadError> {
        locked(&self.objects).insert(key.to_string(), (json, 0));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, PayloadError> {
        locked(&self.objects)
            .get(key)
            .map(|(json, _)| json.clone())
            .ok_or_else(|| PayloadError::Missing(key.to_string()))
    }

    async fn refresh(&self, key: &str) -> Result<(), PayloadError> {
        match locked(&self.objects).get_mut(key) {
            Some((_, refreshed)) => {
                *refreshed += 1;
                Ok(())
            }
            None => Err(PayloadError::Missing(key.to_string())),
        }
    }
}
