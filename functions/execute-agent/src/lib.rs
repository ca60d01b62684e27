//! execute-agent: runs one attempt of a task on its routed agent.
//!
//! The order is what makes duplicates and crashes safe:
//! 1. claim the attempt with a conditional write (one attempt, one lease, one claim token);
//! 2. call the agent once, with the dependencies' outputs and an `Idempotency-Key`;
//! 3. end the attempt, conditioned on still holding the claim: record the output or the
//!    failure, or, for a retryable failure with attempts left, queue the next attempt (on the
//!    decision's next fallback) and send it to routing as a delayed message;
//! 4. after a final end, release the dependents that became ready and finish the workflow if
//!    this was its last task (both in [`baton_chain::attempt`]);
//! 5. send the attempt's outcome to the learner.
//!
//! A redelivered message whose attempt already ended resumes at step 4 (or re-sends the
//! retry): every later step is conditional or idempotent, so nothing happens twice. A handler
//! that dies while holding a lease leaves the task to cleanup, which hands the same attempt
//! back to routing: the agent then sees the same `Idempotency-Key` again. An agent deleted or
//! disabled since routing sends the task back to routing without spending an attempt.

use std::time::Instant;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use baton_aws::batch::process_sqs_batch;
use baton_chain::attempt::{
    conclude_attempt, send_retry, wait_for_capacity, AttemptConclusion, AttemptRun, Concluded,
};
use baton_chain::cache::AgentCache;
use baton_chain::config::Settings;
use baton_chain::context::{self, UpdateOutcome};
use baton_chain::error::ChainError;
use baton_chain::finish::{complete_task, finish_at};
use baton_chain::hold::honour_hold;
use baton_chain::invoker::{AgentCall, AgentInvoker, StreamSink};
use baton_chain::queue::TaskQueue;
use baton_chain::store::{
    new_claim_token, AgentRegistry, AttemptHolder, ChainStore, ClaimOutcome, ContextStore,
    DependencyOutputs, LearningStore, RoutingState, SlotGrant, SlotHold, StreamLog,
    MAX_DEPENDENCY_BYTES,
};
use baton_chain::stream::AttemptStream;
use baton_types::agent::Agent;
use baton_types::clock::now_ms;
use baton_types::contexts::StoredContext;
use baton_types::ids::AgentName;
use baton_types::messages::{
    ExecuteMessage, OutcomeMessage, RouteMessage, TaskRef, FORMAT_VERSION,
};
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::records::TaskRecord;
use baton_types::results::{self, CallDetails, ResultQuery};
use baton_types::retry::RetryPolicy;
use baton_types::task::{AttemptOutcome, AttemptRecord};
use baton_types::text::clipped;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Map, Value};
use tracing::Instrument;

pub struct ExecuteDeps<S, Q, I> {
    pub store: S,
    pub queue: Q,
    pub invoker: I,
    pub settings: Settings,
    pub agents: AgentCache,
}

impl<S, Q, I> ExecuteDeps<S, Q, I> {
    pub fn new(store: S, queue: Q, invoker: I, settings: Settings) -> Self {
        ExecuteDeps {
            store,
            queue,
            invoker,
            settings,
            agents: AgentCache::default(),
        }
    }
}

pub async fn handle_batch<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error>
where
    S: ChainStore + AgentRegistry + RoutingState + LearningStore + ContextStore + StreamLog,
    Q: TaskQueue,
    I: AgentInvoker,
{
    Ok(
        process_sqs_batch(event.payload, |message: ExecuteMessage, delivery| {
            execute(deps, message, delivery.sent_at_ms)
        })
        .await,
    )
}

async fn execute<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    message: ExecuteMessage,
    sent_at_ms: Option<i64>,
) -> Result<(), ChainError>
where
    S: ChainStore + AgentRegistry + RoutingState + LearningStore + ContextStore + StreamLog,
    Q: TaskQueue,
    I: AgentInvoker,
{
    let task = &message.task;
    let agent_name = &message.route.primary;
    let span = task.span("execute");
    span.record("agent", agent_name.as_str());
    async {
        let agent = deps
            .agents
            .agent(&deps.store, &task.tenant, agent_name)
            .await?;
        let Some(agent) = agent.filter(|a| a.enabled) else {
            return reroute(deps, &message).await;
        };
        let now = now_ms();
        if message.profile.missed_deadline(now) {
            return miss_deadline(deps, &message, now).await;
        }
        let token = new_claim_token();
        let lease_until =
            now + agent.timeout_ms as i64 + deps.settings.lease_margin.as_millis() as i64;
        // Calls to an agent with limits (or counted for `least_loaded`) hold a slot while they
        // run; a handler that dies gives it back when the slot's lease runs out.
        let needs = &message.profile.resources;
        let counted = message.route.strategy.uses_load() || agent.limits().is_limited(needs);
        let holder = format!("{}#{token}", task.idempotency_key());
        if counted {
            let hold = SlotHold {
                holder: &holder,
                needs,
                until_ms: lease_until,
            };
            let grant = deps
                .store
                .acquire_slot(&task.tenant, &agent.name, agent.limits(), hold, now)
                .await?;
            if grant == SlotGrant::Full {
                tracing::info!("the agent is at its limits; the task waits");
                let mut again = RouteMessage::new(
                    task.clone(),
                    message.capability.clone(),
                    message.profile.clone(),
                );
                again.waits = message.waits;
                again.dispatch = message.dispatch;
                again.ready_at_ms = message.ready_at_ms;
                return wait_for_capacity(&deps.store, &deps.queue, &deps.settings, &again, now)
                    .await;
            }
        }
        let result =
            run_attempt(deps, &message, &agent, &token, lease_until, now, sent_at_ms).await;
        if counted {
            if let Err(error) = deps
                .store
                .release_slot(&task.tenant, &agent.name, &holder)
                .await
            {
                tracing::warn!(%error, "slot not given back; its lease frees it");
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// Claims the attempt and, if this handler got it, calls the agent and concludes the attempt.
async fn run_attempt<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    message: &ExecuteMessage,
    agent: &Agent,
    token: &str,
    lease_until: i64,
    now: i64,
    sent_at_ms: Option<i64>,
) -> Result<(), ChainError>
where
    S: ChainStore + AgentRegistry + LearningStore + ContextStore + StreamLog,
    Q: TaskQueue,
    I: AgentInvoker,
{
    let task = &message.task;
    let claimed = match deps
        .store
        .claim_task(
            task,
            &agent.name,
            Some(&message.route),
            token,
            lease_until,
            now,
        )
        .await?
    {
        ClaimOutcome::Claimed(record) => {
            baton_chain::metrics::task_started();
            // How long the routed task waited in its execute queue (SQS's `SentTimestamp`).
            baton_chain::metrics::queue_wait(sent_at_ms, now);
            record
        }
        ClaimOutcome::AlreadyFinished(record) => {
            tracing::info!("duplicate delivery of a finished attempt; resuming its follow-up");
            complete_task(&deps.store, &deps.queue, &deps.settings, &record, now).await?;
            return send_outcome(deps, message, &record, task.attempt, agent).await;
        }
        ClaimOutcome::NotClaimable(record) if record.retries_after(task.attempt) => {
            tracing::info!("duplicate delivery of a failed attempt; re-sending its retry");
            let prefer = next_agents(message, &record, agent);
            send_retry(
                &deps.queue,
                &record,
                task.attempt,
                &message.capability,
                prefer,
                now,
            )
            .await?;
            return send_outcome(deps, message, &record, task.attempt, agent).await;
        }
        ClaimOutcome::Held(record, hold) => {
            tracing::info!(
                hold = hold.as_str(),
                "the workflow holds this task; not run"
            );
            honour_hold(&deps.store, &deps.queue, &deps.settings, &record, hold, now).await?;
            return Ok(());
        }
        ClaimOutcome::NotClaimable(record) => {
            tracing::info!(
                status = %record.status,
                current_attempt = record.attempt,
                "attempt is held elsewhere or superseded; acknowledged"
            );
            return Ok(());
        }
        ClaimOutcome::Missing => {
            tracing::warn!("task does not exist; acknowledged");
            return Ok(());
        }
    };

    let outputs = match deps
        .store
        .task_outputs(
            &task.tenant,
            &task.workflow_id,
            &claimed.depends_on,
            MAX_DEPENDENCY_BYTES,
        )
        .await?
    {
        DependencyOutputs::Within(outputs) => outputs,
        DependencyOutputs::TooLarge { bytes } => {
            // More than one call may carry: the task fails for good, and the agent is never
            // called (nor charged in its stats).
            let failure = TaskFailure::new(
                FailureKind::InputTooLarge,
                format!(
                    "the outputs of the task's dependencies come to more than \
                     {MAX_DEPENDENCY_BYTES} bytes (at least {bytes}), more than a task may receive"
                ),
            );
            let conclusion = AttemptConclusion {
                task,
                capability: &claimed.capability,
                holder: AttemptHolder::Claim(token),
                result: Err(failure),
                run: AttemptRun {
                    agent: None,
                    started_at_ms: claimed.started_at_ms,
                    claims: claimed.claims,
                    call_ms: None,
                    usage: None,
                },
                policy: RetryPolicy::resolve(&[]),
                prefer: Vec::new(),
                prior_attempts: message.profile.prior_attempts,
                now_ms: now_ms(),
            };
            conclude_attempt(&deps.store, &deps.queue, &deps.settings, conclusion).await?;
            return Ok(());
        }
    };
    // A conversation turn's agent gets the conversation as it is now, and its own state.
    let input = baton_chain::turn::call_input(&deps.store, &claimed, &agent.name).await?;
    // A streaming task's text goes to its log as it comes, kept as long as the task.
    let stream = claimed.profile.stream.then(|| {
        AttemptStream::new(
            &deps.store,
            task.clone(),
            agent.name.to_string(),
            finish_at(&deps.settings, now).expires_at_s,
        )
    });
    let call = AgentCall {
        task,
        workflow_id: &task.workflow_id,
        task_id: &task.task_id,
        attempt: task.attempt,
        capability: &claimed.capability,
        input: &input,
        dependencies: outputs
            .into_iter()
            .map(|(id, output)| (id.into_string(), output))
            .collect::<Map<_, _>>(),
        memories: relevant_memories(deps, &claimed, &input).await?,
        context: shared_context(deps, &claimed).await?,
        timeout_ms: claimed
            .timeout_ms
            .map_or(agent.timeout_ms, |t| t.min(agent.timeout_ms)),
        stream: stream.as_ref().map(|s| s as &dyn StreamSink),
    };
    let started = Instant::now();
    let answer = deps.invoker.invoke(agent, &call).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let usage = answer.as_ref().ok().and_then(|a| a.usage);
    let result = answer.map(|a| a.output);
    let result = match result {
        Ok(output) => apply_context_update(deps, &claimed, task, output).await?,
        failed => failed,
    };
    baton_chain::metrics::agent_call(&agent.name, latency_ms, result.is_err());
    match &result {
        Ok(_) => tracing::info!(
            latency_ms,
            input_tokens = usage.map(|u| u.input_tokens),
            output_tokens = usage.map(|u| u.output_tokens),
            "agent succeeded"
        ),
        // The message may quote the agent's answer: it is stored, not logged.
        Err(failure) => tracing::warn!(
            latency_ms,
            kind = ?failure.kind,
            http_status = ?failure.http_status,
            "agent failed"
        ),
    }

    let policy = RetryPolicy::resolve(&[claimed.retry.as_ref(), agent.retry.as_ref()]);
    let concluded = conclude_attempt(
        &deps.store,
        &deps.queue,
        &deps.settings,
        AttemptConclusion {
            task,
            capability: &claimed.capability,
            holder: AttemptHolder::Claim(token),
            result,
            run: AttemptRun {
                agent: Some(agent.name.clone()),
                started_at_ms: claimed.started_at_ms,
                claims: claimed.claims,
                call_ms: Some(latency_ms),
                usage,
            },
            policy,
            prefer: next_agents(message, &claimed, agent),
            prior_attempts: message.profile.prior_attempts,
            now_ms: now_ms(),
        },
    )
    .await?;
    match concluded {
        Concluded::Final(record) | Concluded::Retrying(record) => {
            send_outcome(deps, message, &record, task.attempt, agent).await
        }
        Concluded::Superseded => {
            tracing::warn!(
                "lease lost before the result was recorded; a newer claim owns the task"
            );
            Ok(())
        }
    }
}

/// Where the attempt after a failure goes first: the decision's fallbacks in order, or the
/// same agent again when the task asked for no fallback.
fn next_agents(message: &ExecuteMessage, task: &TaskRecord, agent: &Agent) -> Vec<AgentName> {
    if task.fallback {
        message.route.fallbacks.clone()
    } else {
        vec![agent.name.clone()]
    }
}

/// The routed agent was deleted or disabled since routing: the task goes back to routing at
/// the same attempt, kept away from that agent. Nothing is written.
async fn reroute<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    message: &ExecuteMessage,
) -> Result<(), ChainError>
where
    Q: TaskQueue,
{
    tracing::warn!("the routed agent is gone or disabled; the task is routed again");
    let mut route = RouteMessage::new(
        message.task.clone(),
        message.capability.clone(),
        message.profile.clone(),
    );
    route.prefer = message.route.fallbacks.clone();
    route.avoid = vec![message.route.primary.clone()];
    route.dispatch = message.dispatch;
    deps.queue.send_route(&[route]).await?;
    Ok(())
}

/// The task's deadline passed while it waited to start: it fails `deadline_exceeded`, if its
/// attempt is still queued (a copy of a message whose attempt started changes nothing).
async fn miss_deadline<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    message: &ExecuteMessage,
    now: i64,
) -> Result<(), ChainError>
where
    S: ChainStore,
    Q: TaskQueue,
{
    tracing::warn!("the task's deadline passed before it started");
    let failure = TaskFailure::new(
        FailureKind::DeadlineExceeded,
        "the task's deadline passed before it started",
    );
    let conclusion = AttemptConclusion::queued_failure(
        &message.task,
        &message.capability,
        failure,
        RetryPolicy::resolve(&[]),
        Vec::new(),
        message.profile.prior_attempts,
        now,
    );
    conclude_attempt(&deps.store, &deps.queue, &deps.settings, conclusion).await?;
    Ok(())
}

/// The shared context the task names, as the agent receives it (an expired or deleted one
/// reads as empty, at version 0).
async fn shared_context<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    record: &TaskRecord,
) -> Result<Option<Value>, ChainError>
where
    S: ContextStore,
{
    let Some(name) = &record.profile.context else {
        return Ok(None);
    };
    let now = now_ms();
    let context = deps
        .store
        .context(&record.tenant, name)
        .await?
        .filter(|c| !c.is_expired(now))
        .unwrap_or_else(|| StoredContext::empty(name, now));
    Ok(Some(context.for_call()))
}

/// Applies the agent's `context_update` (a merge patch) to the task's context, once per
/// attempt. An update that would pass the context's budget fails the attempt, so no update is
/// silently dropped.
async fn apply_context_update<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    record: &TaskRecord,
    task: &TaskRef,
    output: Value,
) -> Result<Result<Value, TaskFailure>, ChainError>
where
    S: ContextStore,
{
    let (Some(name), Some(patch)) = (&record.profile.context, output.get("context_update")) else {
        return Ok(Ok(output));
    };
    let key = task.idempotency_key();
    match context::apply_update(&deps.store, &record.tenant, name, patch, &key, now_ms()).await? {
        UpdateOutcome::Applied { version } => {
            tracing::info!(context = %name, version, "context updated");
            Ok(Ok(output))
        }
        UpdateOutcome::AlreadyApplied => Ok(Ok(output)),
        UpdateOutcome::Refused(why) => Ok(Err(TaskFailure::new(
            FailureKind::InvalidResponse,
            format!("the agent's context_update to `{name}` was refused: {why}"),
        ))),
    }
}

/// The past results the task asked for (`memory.relevant`), most like its input first: of
/// its task type, on the agents that offer its capability, its own earlier attempts left out.
async fn relevant_memories<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    record: &TaskRecord,
    input: &Value,
) -> Result<Vec<Value>, ChainError>
where
    S: AgentRegistry + LearningStore,
{
    let Some(ask) = record.profile.memory else {
        return Ok(Vec::new());
    };
    let now = now_ms();
    let query = ResultQuery {
        task_type: Some(record.profile.learning_type(&record.capability).to_string()),
        success: None,
        since_ms: 0,
        until_ms: now,
        limit: results::MAX_RESULTS,
    };
    let agents = deps.agents.agents(&deps.store, &record.tenant).await?;
    let mut found = Vec::new();
    for agent in agents
        .iter()
        .filter(|a| a.has_capability(&record.capability))
    {
        found.extend(
            deps.store
                .past_results(&record.tenant, &agent.name, &query)
                .await?,
        );
    }
    found.retain(|r| !(r.workflow_id == record.workflow_id && r.task_id == record.id));
    let words = results::words(&input.to_string());
    Ok(
        results::most_relevant(&words, found, now, ask.relevant as usize)
            .into_iter()
            .map(|(relevance, result)| results::memory_of(relevance, &result))
            .collect(),
    )
}

/// Tells the learner how the agent did on `attempt`, from the attempt's stored record. Only
/// attempts that called the agent and say something about it are learned from.
async fn send_outcome<S, Q, I>(
    deps: &ExecuteDeps<S, Q, I>,
    message: &ExecuteMessage,
    record: &TaskRecord,
    attempt: u32,
    agent: &Agent,
) -> Result<(), ChainError>
where
    Q: TaskQueue,
{
    let Some(ended) = record.attempts.iter().rev().find(|a| a.attempt == attempt) else {
        return Ok(());
    };
    let Some(outcome) = outcome_of(message, record, ended, agent) else {
        return Ok(());
    };
    deps.queue.send_outcome(&outcome).await?;
    Ok(())
}

fn outcome_of(
    message: &ExecuteMessage,
    record: &TaskRecord,
    ended: &AttemptRecord,
    agent: &Agent,
) -> Option<OutcomeMessage> {
    let called = ended.agent.as_ref()?;
    let says_something = ended
        .error
        .as_ref()
        .is_none_or(|e| e.kind.is_agent_outcome());
    if !says_something {
        return None;
    }
    let success = ended.outcome == AttemptOutcome::Succeeded;
    let latency_ms = ended
        .started_at_ms
        .map_or(0, |started| (ended.finished_at_ms - started).max(0) as u64);
    Some(OutcomeMessage {
        v: FORMAT_VERSION,
        task: TaskRef {
            attempt: ended.attempt,
            ..record.task_ref()
        },
        agent: called.clone(),
        task_type: record.profile.learning_type(&record.capability).to_string(),
        success,
        latency_ms,
        failure: ended.error.as_ref().map(|f| f.kind),
        usage: ended.usage,
        finished_at_ms: ended.finished_at_ms,
        counts_for_circuit: success || ended.error.as_ref().is_some_and(|f| f.trips_circuit()),
        breaker: (*called == agent.name)
            .then_some(agent.circuit_breaker)
            .flatten(),
        details: call_details(message, record, ended),
    })
}

/// What is remembered of the call besides its outcome. A conversation's turns keep no
/// previews: what was said belongs to the session, and goes with it.
fn call_details(
    message: &ExecuteMessage,
    record: &TaskRecord,
    ended: &AttemptRecord,
) -> CallDetails {
    let in_conversation = record.profile.turn.is_some();
    let output_preview = match (&record.output, &record.output_preview) {
        (Some(output), _) => Some(results::preview(output)),
        (None, Some(start)) => Some(clipped(start, results::PREVIEW_BYTES)),
        (None, None) => None,
    };
    CallDetails {
        capability: record.capability.clone(),
        queue_wait_ms: message
            .ready_at_ms
            .zip(ended.started_at_ms)
            .map(|(ready, started)| (started - ready).max(0) as u64),
        busy_waits: message.waits,
        strategy: Some(message.route.strategy),
        deadline_slack_ms: record
            .profile
            .deadline_at_ms
            .zip(ended.started_at_ms)
            .map(|(deadline, started)| deadline - started),
        failure_message: ended
            .error
            .as_ref()
            .map(|f| results::normalise_failure(&f.message)),
        input_preview: (!in_conversation).then(|| results::preview(&record.input)),
        output_preview: output_preview.filter(|_| !in_conversation),
    }
}
