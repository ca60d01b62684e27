//! route: picks the agent(s) for each ready task and hands the task to execute-agent.
//!
//! Routing writes nothing on the happy path, so a duplicate message only produces a duplicate
//! execute message, which execute-agent's claim absorbs. It reads the candidates' circuits and
//! (through a two-second cache) learned stats in one batch, the calls in flight of agents with
//! limits, and the shared counter for `round_robin`; it skips unhealthy agents, open circuits
//! and full agents; a half-open circuit's one probe is handed out with a conditional write.
//! Besides that:
//! - a task whose deadline passed before it started fails `deadline_exceeded`;
//! - when every candidate is at its limits, the task waits (a delayed message, its dispatch
//!   lease moved along) without spending an attempt;
//! - a message not yet due (a backoff longer than SQS's 15-minute delay) is sent again with
//!   the rest of its delay;
//! - a message older than the dispatch time-out is checked against the task and dropped if
//!   cleanup has sent the attempt again since (only older messages pay for the read);
//! - when agents have the capability but none can take a call, the attempt ends as a
//!   retryable failure (`circuit_open` or `no_healthy_agent`): the task waits, as a retry,
//!   and fails only when its attempts are used up;
//! - a task no enabled agent can take fails, through the same completion steps as any other.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_aws::batch::{process_sqs_batch, Delivery};
use baton_chain::attempt::{conclude_attempt, wait_for_capacity, AttemptConclusion};
use baton_chain::cache::{AgentCache, ConfigCache, TtlCache};
use baton_chain::config::Settings;
use baton_chain::error::ChainError;
use baton_chain::queue::delay_until;
use baton_chain::queue::{QueueError, TaskQueue};
use baton_chain::store::{AgentRegistry, ChainStore, ConfigStore, LearningStore, RoutingState};
use baton_types::agent::Agent;
use baton_types::circuit::Probe;
use baton_types::clock::now_ms;
use baton_types::ids::{AgentName, TenantId};
use baton_types::learning::AgentStats;
use baton_types::messages::{ExecuteMessage, OutcomeMessage, RouteMessage, FORMAT_VERSION};
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::retry::RetryPolicy;
use baton_types::routing::{
    route_task, LearningSettings, RouteDecision, RoutePlan, RouteRequest, RoutingView,
};
use lambda_runtime::{Error, LambdaEvent};
use std::collections::HashMap;
use std::time::Duration;
use tracing::Instrument;

/// A message due within this much is routed now rather than sent round again.
const DUE_SLACK_MS: i64 = 1_000;
/// How long a handed-out probe stays the circuit's only one, beyond the agent's time-out and
/// the lease margin: time for the execute queue and the learner to report back.
const PROBE_REPORT_MS: i64 = 60_000;

/// How long one process routes on the learned stats it read, per task type and candidates.
const STATS_TTL: Duration = Duration::from_secs(2);

pub struct RouteDeps<S, Q> {
    pub store: S,
    pub queue: Q,
    pub settings: Settings,
    pub agents: AgentCache,
    pub config: ConfigCache,
    pub stats: TtlCache<(TenantId, String, Vec<AgentName>), HashMap<String, AgentStats>>,
}

impl<S, Q> RouteDeps<S, Q> {
    pub fn new(store: S, queue: Q, settings: Settings) -> Self {
        RouteDeps {
            store,
            queue,
            settings,
            agents: AgentCache::default(),
            config: ConfigCache::default(),
            stats: TtlCache::new(STATS_TTL),
        }
    }
}

/// Everything route needs of the store.
pub trait RouteStore:
    ChainStore + AgentRegistry + LearningStore + ConfigStore + RoutingState
{
}

impl<S> RouteStore for S where
    S: ChainStore + AgentRegistry + LearningStore + ConfigStore + RoutingState
{
}

pub async fn handle_batch<S, Q>(
    deps: &RouteDeps<S, Q>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error>
where
    S: RouteStore,
    Q: TaskQueue,
{
    Ok(
        process_sqs_batch(event.payload, |message: RouteMessage, delivery| {
            route_message(deps, message, delivery)
        })
        .await,
    )
}

async fn route_message<S, Q>(
    deps: &RouteDeps<S, Q>,
    message: RouteMessage,
    delivery: Delivery,
) -> Result<(), ChainError>
where
    S: RouteStore,
    Q: TaskQueue,
{
    let task = &message.task;
    let span = task.span("route");
    async {
        let now = now_ms();
        if let Some(due) = message.not_before_ms.filter(|due| *due > now + DUE_SLACK_MS) {
            tracing::debug!(wait_ms = due - now, "not due yet; sent round again");
            deps.queue
                .send_route_after(&message, delay_until(due, now))
                .await?;
            return Ok(());
        }
        // Retries and waits are delayed on purpose: only a first send's wait is queueing.
        let first_pass = task.attempt == 1 && message.waits == 0;
        if first_pass {
            baton_chain::metrics::queue_wait(delivery.sent_at_ms, now);
        }
        // A first send became ready when it was sent; a retry when its delay ran out.
        let ready_at_ms = message.ready_at_ms.unwrap_or(match delivery.sent_at_ms {
            Some(sent) if first_pass => sent.min(now),
            _ => now,
        });
        // A message older than the dispatch time-out may have been sent again by cleanup
        // (a backlog, not a loss): only the newest copy goes on, so a backlog is not doubled.
        let may_have_newer_copy = delivery
            .sent_at_ms
            .is_some_and(|sent| now - sent > deps.settings.dispatch_timeout.as_millis() as i64);
        let checked_live = may_have_newer_copy;
        if checked_live && !is_live(deps, &message).await? {
            tracing::info!(dispatch = message.dispatch, "a late copy of a task's message; dropped");
            return Ok(());
        }
        if message.profile.missed_deadline(now) {
            tracing::warn!("the task's deadline passed before it started");
            let failure = TaskFailure::new(
                FailureKind::DeadlineExceeded,
                "the task's deadline passed before it started",
            );
            return end_unroutable(deps, &message, failure, now).await;
        }
        let tenant = &task.tenant;
        // A task that names its agent (a conversation turn's) is routed to that agent only.
        let pinned = |a: &&Agent| message.profile.agent.as_ref().is_none_or(|p| p == &a.name);
        let capable = |agents: &[Agent]| {
            agents
                .iter()
                .filter(pinned)
                .filter(|a| a.enabled && a.has_capability(&message.capability))
                .filter(|a| !message.avoid.contains(&a.name))
                .map(|a| a.name.clone())
                .collect::<Vec<_>>()
        };
        let mut agents = deps.agents.agents(&deps.store, tenant).await?;
        if capable(&agents).is_empty() {
            // Do not fail a task on a cached view: an agent may have been registered just now.
            agents = deps.agents.refresh(&deps.store, tenant).await?;
        }
        if message.profile.agent.is_some() {
            agents = std::sync::Arc::new(agents.iter().filter(pinned).cloned().collect());
        }
        let config = deps.config.config(&deps.store, tenant).await?;
        let defaults = config.capability(&message.capability);
        let strategy = message
            .profile
            .routing
            .or(defaults.routing)
            .unwrap_or_default();
        let task_type = message.profile.learning_type(&message.capability);
        let candidates = capable(&agents);
        // Learned stats move slowly and are cached; circuits change with a single call and
        // are read for every task, in the same batch as the stats when those are due.
        let stats_key = (tenant.clone(), task_type.to_string(), candidates.clone());
        let mut view = match deps.stats.fresh(&stats_key) {
            Some(stats) => RoutingView {
                stats: HashMap::clone(&stats),
                ..deps.store.routing_view(tenant, None, &candidates).await?
            },
            None => {
                let view = deps
                    .store
                    .routing_view(tenant, Some(task_type), &candidates)
                    .await?;
                deps.stats.insert(stats_key, view.stats.clone());
                view
            }
        };
        // Calls in flight are read only where they matter: agents with limits, or every
        // candidate when the strategy balances by load.
        let counted: Vec<AgentName> = agents
            .iter()
            .filter(|a| candidates.contains(&a.name))
            .filter(|a| strategy.uses_load() || a.limits().is_limited(&message.profile.resources))
            .map(|a| a.name.clone())
            .collect();
        if !counted.is_empty() {
            view.load = deps.store.loads(tenant, &counted, now).await?;
        }
        if strategy.uses_rotation() {
            view.rotation = Some(deps.store.next_turn(tenant, &message.capability).await?);
        }
        let spread_key = task.idempotency_key();
        let request = RouteRequest {
            capability: &message.capability,
            strategy,
            needs: &message.profile.resources,
            prefer: &message.prefer,
            avoid: &message.avoid,
            spread_key: &spread_key,
            now_ms: now,
            learning: LearningSettings {
                half_life_ms: deps.settings.half_life_ms(),
                latency_target_ms: defaults.latency_target_ms,
            },
        };
        // A probe lost to another router is out: route again without that agent.
        let plan = loop {
            match route_task(&request, &agents, &view) {
                Ok(RoutePlan::Routed(decision)) if decision.probe => {
                    // The probe must be a call that will happen: a late copy of a message
                    // whose attempt has moved on would hold it and never report.
                    if !checked_live && !is_live(deps, &message).await? {
                        tracing::info!("the attempt has moved on; this copy is dropped");
                        return Ok(());
                    }
                    if take_probe(deps, &agents, &decision, task, &mut view, now).await? {
                        break Ok(RoutePlan::Routed(decision));
                    }
                }
                other => break other,
            }
        };
        match plan {
            Ok(RoutePlan::Routed(route)) => {
                tracing::info!(agent = %route.primary, confidence = route.confidence, probe = route.probe, "routed");
                let strategy = route.strategy;
                deps.queue
                    .send_execute(&ExecuteMessage {
                        v: FORMAT_VERSION,
                        task: task.clone(),
                        capability: message.capability.clone(),
                        profile: message.profile.clone(),
                        route,
                        waits: message.waits,
                        dispatch: message.dispatch,
                        ready_at_ms: Some(ready_at_ms),
                    })
                    .await?;
                baton_chain::metrics::routed(strategy);
                Ok(())
            }
            Ok(RoutePlan::Unavailable {
                kind,
                message: why,
                retry_at_ms,
            }) => {
                tracing::warn!(?kind, "no capable agent can take a call now");
                let mut failure = TaskFailure::new(kind, why);
                failure.retry_after_ms = retry_at_ms.map(|at| (at - now).max(0) as u64);
                end_unroutable(deps, &message, failure, now).await
            }
            Ok(RoutePlan::Busy { message: why }) => {
                tracing::info!(reason = %why, "no room on any agent");
                let waiting = RouteMessage {
                    ready_at_ms: Some(ready_at_ms),
                    ..message.clone()
                };
                wait_for_capacity(&deps.store, &deps.queue, &deps.settings, &waiting, now).await
            }
            Err(no_agent) => {
                tracing::warn!(capability = %message.capability, "no capable agent; the task fails");
                let failure = TaskFailure::new(FailureKind::NoCapableAgent, no_agent.to_string());
                end_unroutable(deps, &message, failure, now).await
            }
        }
    }
    .instrument(span)
    .await
}

/// Whether this message is still its task's live one (see [`RouteMessage::is_live_for`]).
async fn is_live<S, Q>(deps: &RouteDeps<S, Q>, message: &RouteMessage) -> Result<bool, ChainError>
where
    S: ChainStore,
{
    let task = &message.task;
    let record = deps
        .store
        .task(&task.tenant, &task.workflow_id, &task.task_id)
        .await?;
    Ok(record.is_some_and(|r| message.is_live_for(r.status, r.attempt, r.dispatches)))
}

/// Hands the half-open circuit's probe to this task. If another router got it first, the
/// view learns of that probe so the next round routes around it.
async fn take_probe<S, Q>(
    deps: &RouteDeps<S, Q>,
    agents: &[Agent],
    decision: &RouteDecision,
    task: &baton_types::messages::TaskRef,
    view: &mut RoutingView,
    now: i64,
) -> Result<bool, ChainError>
where
    S: LearningStore,
{
    let timeout_ms = agents
        .iter()
        .find(|a| a.name == decision.primary)
        .map_or(0, |a| a.timeout_ms as i64);
    let probe = Probe {
        key: task.idempotency_key(),
        until_ms: now
            + timeout_ms
            + deps.settings.lease_margin.as_millis() as i64
            + PROBE_REPORT_MS,
    };
    let Some(circuit) = view.circuits.get_mut(decision.primary.as_str()) else {
        return Ok(true);
    };
    let opened_at = circuit.opened_at_ms.unwrap_or_default();
    let taken = deps
        .store
        .take_probe(&task.tenant, &decision.primary, &probe, opened_at, now)
        .await?;
    if taken {
        tracing::info!(agent = %decision.primary, "half-open circuit: this task is its probe");
    } else {
        circuit.probe = Some(probe);
    }
    Ok(taken)
}

/// Ends the queued attempt of a task no agent can take now: a retryable failure waits as a
/// retry (keeping the preference for when it comes back), the rest fail the task.
async fn end_unroutable<S, Q>(
    deps: &RouteDeps<S, Q>,
    message: &RouteMessage,
    failure: TaskFailure,
    now: i64,
) -> Result<(), ChainError>
where
    S: ChainStore,
    Q: TaskQueue,
{
    let task = &message.task;
    let Some(record) = deps
        .store
        .task(&task.tenant, &task.workflow_id, &task.task_id)
        .await?
    else {
        tracing::warn!("task does not exist; acknowledged");
        return Ok(());
    };
    let policy = RetryPolicy::resolve(&[record.retry.as_ref()]);
    if failure.retryable && record.attempt == task.attempt && record.claims > 0 {
        // A handler died holding this attempt, so whether the agent did its work is unknown:
        // the attempt keeps its number (and the agent its Idempotency-Key) and waits unspent.
        let wait = failure
            .retry_after_ms
            .unwrap_or_else(|| policy.backoff_ms(record.claims));
        let mut later = message.clone();
        later.not_before_ms = Some(now + wait as i64);
        tracing::info!(
            wait_ms = wait,
            "an attempt whose handler died waits for an agent"
        );
        deps.queue
            .send_route_after(&later, delay_until(now + wait as i64, now))
            .await?;
        return Ok(());
    }
    let conclusion = AttemptConclusion::queued_failure(
        task,
        &message.capability,
        failure,
        policy,
        message.prefer.clone(),
        message.profile.prior_attempts,
        now,
    );
    let concluded = conclude_attempt(&deps.store, &deps.queue, &deps.settings, conclusion).await?;
    if matches!(concluded, baton_chain::attempt::Concluded::Superseded) {
        tracing::info!("task moved on before it could be ended; acknowledged");
    }
    Ok(())
}

/// How many ready tasks one `send_route` routes at once.
const INLINE_CONCURRENCY: usize = 10;
/// How many ready tasks one `send_route` routes itself; the rest go to the route queue, so a
/// wide fan-out does not hold up the request or handler that released it.
pub const INLINE_LIMIT: usize = 50;

/// Routes ready tasks where they become ready, so that a DAG level costs one queue hop, not
/// two (to route, then to execute). It is orchestrate's and execute-agent's queue: `send_route`
/// routes each message at once (the first [`INLINE_LIMIT`]), as the route function would, and
/// sends its execute message; a message it could not route (a store or queue error) and those
/// past the limit go to the route queue as before, so the worst case is the two-hop path.
/// Everything else goes to the queues as it is: delayed retries and waits for capacity,
/// outcomes, and what routing itself sends. The route function keeps those, and the sweep's
/// resends.
///
/// Safe under the chain's rules: routing writes nothing on the happy path, and a message both
/// routed here and sent to the route queue (a send whose response was lost) makes a second
/// execute message, which the claim absorbs. A handler that dies between a release and its
/// routing leaves the task queued under its dispatch lease, as a lost route message would.
pub struct InlineRouting<S, Q> {
    deps: RouteDeps<S, Q>,
    limit: usize,
}

impl<S, Q> InlineRouting<S, Q> {
    pub fn new(deps: RouteDeps<S, Q>) -> Self {
        Self::with_limit(deps, INLINE_LIMIT)
    }

    /// Routes at most `limit` tasks of a `send_route` itself (0: none; every task goes through
    /// the route queue, as when a local stack runs without the route function).
    pub fn with_limit(deps: RouteDeps<S, Q>, limit: usize) -> Self {
        InlineRouting { deps, limit }
    }

    /// The queues themselves, for what must not be routed here.
    pub fn queues(&self) -> &Q {
        &self.deps.queue
    }
}

#[async_trait::async_trait]
impl<S, Q> TaskQueue for InlineRouting<S, Q>
where
    S: RouteStore,
    Q: TaskQueue,
{
    async fn send_route(&self, messages: &[RouteMessage]) -> Result<(), QueueError> {
        let inline = messages.len().min(self.limit);
        let mut unrouted = messages[inline..].to_vec();
        for chunk in messages[..inline].chunks(INLINE_CONCURRENCY) {
            let routed = futures::future::join_all(chunk.iter().map(|message| {
                // Sent just now: no queue wait to report, and no older copy to check for.
                route_message(&self.deps, message.clone(), Delivery { sent_at_ms: None })
            }))
            .await;
            for (message, result) in chunk.iter().zip(routed) {
                if let Err(error) = result {
                    tracing::warn!(task = %message.task.task_id, %error, "routing here failed; the task goes to the route queue");
                    unrouted.push(message.clone());
                }
            }
        }
        if unrouted.is_empty() {
            return Ok(());
        }
        self.deps.queue.send_route(&unrouted).await
    }

    async fn send_route_after(
        &self,
        message: &RouteMessage,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.deps.queue.send_route_after(message, delay).await
    }

    async fn send_execute(&self, message: &ExecuteMessage) -> Result<(), QueueError> {
        self.deps.queue.send_execute(message).await
    }

    async fn send_outcome(&self, message: &OutcomeMessage) -> Result<(), QueueError> {
        self.deps.queue.send_outcome(message).await
    }
}
