//! Conversation turns over HTTP: `POST /v1/sessions/{id}/messages`, `GET …/turns/{turn}`,
//! `POST …/resume`, and the compatibility endpoint `POST /orchestrate`.
//!
//! A turn is read, analysed and planned here, then written in one transaction with its
//! workflows (which also takes the session's one running turn), and its first tasks go to
//! routing. The chain runs the agents and records the answer; this handler waits for it up to
//! `wait` seconds, or answers 202 with the turn to fetch later.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_chain::invoker::AgentCall;
use baton_chain::queue::TaskQueue;
use baton_chain::store::{
    AdmissionStore, AgentRegistry, ConfigStore, NewTask, NewWorkflow, Resumed, SessionBundle,
    SessionStore, TurnStart, TurnStarted, TurnStore,
};
use baton_types::agent::Agent;
use baton_types::clock::now_ms;
use baton_types::conversation::{
    plan_turn, Analysis, AnalysisMethod, PlanError, TurnPlan, TurnTask, CLASSIFY, DEFAULT_WAIT_S,
    MAX_CHANNEL_CHARS, MAX_TURN_TEXT_CHARS, MAX_WAIT_S,
};
use baton_types::ids::{AgentName, SessionId, TaskId, TenantId, WorkflowId};
use baton_types::messages::{RouteMessage, TaskRef};
use baton_types::priority::{Band, Priority};
use baton_types::recall::{self, HistoryNote};
use baton_types::roles::Role;
use baton_types::session::{Session, SessionInput};
use baton_types::task::{TaskProfile, TaskStatus};
use baton_types::turn::{
    shown_async_results, AsyncResult, TurnRecord, TurnStatus, TurnTiming, MAX_SHOWN_PER_TURN,
};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::bodies::{
    InstanceView, Paused, PausedTurnView, SessionResumed, SessionView, TimingMetrics, TurnAnswer,
    TurnView,
};
use crate::error::json_response;
use crate::routes::parse_body;
use crate::{Api, ApiError};

/// How long the classifier may take: the analysis is on the turn's critical path.
const CLASSIFIER_TIMEOUT_MS: u64 = 5_000;

/// The body of `POST /v1/sessions/{id}/messages`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TurnInput {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 8000))]
    pub text: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)
    )]
    pub detected_agent: Option<String>,
    pub services: Option<Vec<String>>,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub channel: Option<String>,
    /// Seconds to wait for the answer before answering 202 (0 to 28, default 25).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 28))]
    pub wait: Option<f64>,
}

/// A turn as asked, checked for what needs no reads.
pub struct TurnAsk {
    pub text: String,
    pub detected_agent: Option<AgentName>,
    pub services: Option<Vec<AgentName>>,
    pub channel: Option<String>,
    pub wait: Duration,
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    let message = message.into();
    ApiError::invalid(format!("{field}: {message}"), json!({ "field": field }))
}

impl TurnInput {
    pub fn check(self) -> Result<TurnAsk, ApiError> {
        let text = self.text.trim().to_string();
        if text.is_empty() {
            return Err(invalid("text", "a message needs some text"));
        }
        let chars = text.chars().count();
        if chars > MAX_TURN_TEXT_CHARS {
            return Err(invalid(
                "text",
                format!("is {chars} characters; the limit is {MAX_TURN_TEXT_CHARS}"),
            ));
        }
        let detected_agent = self
            .detected_agent
            .as_deref()
            .map(AgentName::parse)
            .transpose()
            .map_err(|e| invalid("detected_agent", e.to_string()))?;
        let services = self
            .services
            .map(|names| names.iter().map(|name| AgentName::parse(name)).collect())
            .transpose()
            .map_err(|e| invalid("services", e.to_string()))?;
        if let Some(channel) = &self.channel {
            if channel.is_empty() || channel.chars().count() > MAX_CHANNEL_CHARS {
                return Err(invalid(
                    "channel",
                    format!("a channel has 1 to {MAX_CHANNEL_CHARS} characters"),
                ));
            }
        }
        let wait = self.wait.unwrap_or(DEFAULT_WAIT_S);
        if !(0.0..=MAX_WAIT_S).contains(&wait) {
            return Err(invalid(
                "wait",
                format!("must be from 0 to {MAX_WAIT_S} seconds, got {wait}"),
            ));
        }
        Ok(TurnAsk {
            text,
            detected_agent,
            services,
            channel: self.channel,
            wait: Duration::from_secs_f64(wait),
        })
    }
}

/// What a turn request came to.
pub enum TurnReply {
    /// The session is paused for a human: no agent ran.
    Paused(Session),
    /// The turn ended (answered or failed) within the wait.
    Finished(TurnRecord),
    /// Still running when the wait ran out.
    Running(TurnRecord),
}

pub fn session_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("session `{id}` does not exist or has ended"))
}

/// A new session's id: a UUID v7, which keeps the rules of a session id.
pub(crate) fn new_session_id() -> SessionId {
    SessionId::parse(&uuid::Uuid::now_v7().to_string()).expect("a UUID is a session id")
}

/// Runs one turn of `session_id` and waits for its answer.
pub async fn run_turn<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    session_id: &SessionId,
    ask: TurnAsk,
    arrived: Instant,
) -> Result<TurnReply, ApiError>
where
    S: SessionStore + TurnStore + AgentRegistry + ConfigStore + AdmissionStore,
    Q: TaskQueue,
{
    let created_at_ms = now_ms();
    let bundle = api
        .store
        .session_bundle(tenant, session_id)
        .await?
        .filter(|b| !b.session.is_expired(created_at_ms))
        .ok_or_else(|| session_not_found(session_id))?;
    let state_load_ms = arrived.elapsed().as_millis() as u64;
    let session = &bundle.session;

    let mut registered = api.agents.agents(&api.store, tenant).await?;
    let named = ask
        .detected_agent
        .iter()
        .chain(ask.services.iter().flatten())
        .map(AgentName::as_str)
        .chain(session.agents.iter().map(String::as_str));
    if named
        .clone()
        .any(|n| !registered.iter().any(|a| a.name == n))
    {
        registered = api.agents.refresh(&api.store, tenant).await?;
    }
    let members: Vec<&Agent> = session
        .agents
        .iter()
        .filter_map(|name| registered.iter().find(|a| &a.name == name))
        .filter(|a| a.enabled)
        .collect();
    let is_member = |name: &str| members.iter().any(|a| a.name == name);
    if let Some(agent) = &ask.detected_agent {
        if !is_member(agent) {
            return Err(invalid(
                "detected_agent",
                format!("`{agent}` is not an enabled agent of this session"),
            ));
        }
    }
    if let Some(unknown) = ask.services.iter().flatten().find(|s| !is_member(s)) {
        return Err(invalid(
            "services",
            format!("`{unknown}` is not an enabled agent of this session"),
        ));
    }
    if session.state.flags.is_paused {
        return Ok(TurnReply::Paused(session.clone()));
    }
    if let Some(active_turn) = session.active_turn {
        return Err(turn_in_progress(session_id, active_turn));
    }

    let analysis_started = Instant::now();
    let analysis = analyse(
        api,
        tenant,
        &ask,
        &registered,
        &members,
        session_id,
        session.turns + 1,
    )
    .await;
    let analysis_ms = analysis_started.elapsed().as_millis() as u64;
    let mut plan = plan_turn(
        &members,
        analysis.detected_agent.as_deref(),
        ask.services.as_deref(),
    )
    .map_err(|e| match e {
        PlanError::NoCore => ApiError::Refused {
            status: 409,
            code: "no_core_agent",
            message: format!("session `{session_id}`: {e}"),
            details: json!({ "field": "agents" }),
        },
        PlanError::Cycle(_) => invalid("agents", e.to_string()),
    })?;

    let turn_number = session.turns + 1;
    // The tenant's summarizer keeps the conversation's older turns as a running summary; a
    // turn with enough turns waiting also calls it to fold them.
    plan.summarizer = registered
        .iter()
        .find(|a| a.enabled && a.has_capability(recall::SUMMARIZE))
        .map(|a| a.name.clone());
    let folded = plan
        .summarizer
        .as_ref()
        .and_then(|_| recall::fold_due(&session.state, session.history_turns));
    plan.summarizes_through = folded.as_ref().and_then(|f| f.last()).map(|t| t.turn);
    let shown: Vec<AsyncResult> = bundle
        .pending
        .iter()
        .take(MAX_SHOWN_PER_TURN)
        .cloned()
        .collect();
    // Bounded previews, in the turn and in the input of the agent that answers, the only one
    // that receives them.
    let async_agent_results = shown_async_results(&shown);
    let workflows = turn_workflows(
        api,
        tenant,
        &TurnShape {
            session,
            turn: turn_number,
            plan: &plan,
            agents: &members,
            base_input: json!({
                "session_id": session_id,
                "turn": turn_number,
                "text": ask.text,
                "channel": ask.channel,
                "services": ask.services,
                "detected_agent": analysis.detected_agent,
            }),
            async_agent_results: &async_agent_results,
            fold_input: folded.map(|turns| recall::fold_input(&session.state, &turns)),
            now_ms: created_at_ms,
        },
    )?;
    // A turn's tasks count against the tenant's pace and backlog like any others, but are
    // never delayed: a person is waiting, and a session runs one turn at a time.
    let quotas = crate::admission::quotas(api, tenant).await?;
    let demand = baton_types::quota::Demand {
        tasks: workflows.iter().map(|w| w.tasks.len() as u32).sum(),
        urgent: 0,
    };
    crate::admission::admit_tasks(api, tenant, &quotas, demand, created_at_ms).await?;
    let mut turn = TurnRecord {
        session_id: session_id.clone(),
        turn: turn_number,
        text: ask.text.clone(),
        channel: ask.channel.clone(),
        services: ask
            .services
            .as_ref()
            .map(|names| names.iter().map(String::from).collect()),
        analysis,
        plan,
        history: HistoryNote::of(&session.state, turn_number),
        workflow_id: workflows[0].workflow_id.clone(),
        async_workflow_id: workflows.get(1).map(|w| w.workflow_id.clone()),
        status: TurnStatus::Running,
        response: None,
        answer: None,
        sync_agent_results: Map::new(),
        async_agent_results,
        error: None,
        checkpoint_progress: Vec::new(),
        state: None,
        timing: TurnTiming {
            state_load_ms,
            analysis_ms,
            ..TurnTiming::default()
        },
        created_at_ms,
        answered_at_ms: None,
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let save_started = Instant::now();
    let started = api
        .store
        .start_turn(
            tenant,
            &TurnStart {
                session,
                turn: &turn,
                workflows: &workflows,
                shown: &shown,
                request_id: &request_id,
                now_ms: created_at_ms,
            },
        )
        .await?;
    turn.timing.save_ms = save_started.elapsed().as_millis() as u64;
    match started {
        TurnStarted::Started => {}
        TurnStarted::Busy { active_turn } => return Err(turn_in_progress(session_id, active_turn)),
        TurnStarted::Stale => {
            return Err(ApiError::Refused {
                status: 409,
                code: "turn_in_progress",
                message: format!(
                    "session `{session_id}`: another message started a turn while this one was read; send it again"
                ),
                details: json!({}),
            })
        }
        TurnStarted::Gone => return Err(session_not_found(session_id)),
    }
    tracing::info!(%tenant, session = %session_id, turn = turn_number, "turn started");
    let ready: Vec<RouteMessage> = workflows
        .iter()
        .flat_map(|w| {
            w.tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Queued)
                .map(|t| {
                    let task = TaskRef {
                        tenant: tenant.clone(),
                        workflow_id: w.workflow_id.clone(),
                        task_id: t.id.clone(),
                        attempt: 1,
                    };
                    RouteMessage::new(task, t.capability.clone(), t.profile.clone())
                })
        })
        .collect();
    if let Err(error) = api.queue.send_route(&ready).await {
        // The tasks hold dispatch leases: cleanup sends them when the leases run out.
        tracing::error!(%error, "turn's first tasks not sent; cleanup will send them");
    }
    let save_ms = turn.timing.save_ms;
    // The turn was stored before its save could be timed: the live answer carries it.
    let mut reply = wait_for_answer(api, tenant, turn, arrived + ask.wait).await?;
    if let TurnReply::Finished(turn) | TurnReply::Running(turn) = &mut reply {
        turn.timing.save_ms = save_ms;
    }
    Ok(reply)
}

fn turn_in_progress(session_id: &str, active_turn: u32) -> ApiError {
    ApiError::Refused {
        status: 409,
        code: "turn_in_progress",
        message: format!(
            "session `{session_id}` is still answering turn {active_turn}: send the next message once it is answered (GET /v1/sessions/{session_id}/turns/{active_turn})"
        ),
        details: json!({ "active_turn": active_turn }),
    }
}

/// Polls the turn until it ends or `until`, backing off from 20 ms to 100 ms: a turn takes a
/// few hundred milliseconds of chain, and each poll is one small consistent read.
async fn wait_for_answer<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    mut turn: TurnRecord,
    until: Instant,
) -> Result<TurnReply, ApiError>
where
    S: TurnStore,
{
    let mut pause = Duration::from_millis(20);
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(TurnReply::Running(turn));
        }
        tokio::time::sleep(pause.min(until - now)).await;
        pause = (pause * 3 / 2).min(Duration::from_millis(100));
        if let Some(current) = api.store.turn(tenant, &turn.session_id, turn.turn).await? {
            turn = current;
            if turn.status != TurnStatus::Running {
                return Ok(TurnReply::Finished(turn));
            }
        }
    }
}

/// The query analysis: the client's `detected_agent`, else the tenant's classifier, else the
/// rules over the session's agents' keywords and task types.
async fn analyse<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    ask: &TurnAsk,
    registered: &[Agent],
    members: &[&Agent],
    session_id: &SessionId,
    turn: u32,
) -> Analysis
where
    S: AgentRegistry,
{
    if let Some(agent) = &ask.detected_agent {
        return Analysis::by_client(agent);
    }
    let classifier = registered
        .iter()
        .find(|a| a.enabled && a.has_capability(CLASSIFY));
    let (Some(classifier), Some(invoker)) = (classifier, api.classifier.as_ref()) else {
        return Analysis::by_rules(&ask.text, members);
    };
    // The registry as cached holds no prompts: the call needs the agent whole.
    let whole = api.agents.agent(&api.store, tenant, &classifier.name).await;
    let Ok(Some(classifier)) = whole else {
        return Analysis::by_rules(&ask.text, members);
    };
    let classifier = &classifier;
    let candidates: Vec<Value> = members
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "keywords": a.keywords,
                "task_types": a.task_types,
                "role": a.conversation.as_ref().map(|c| c.role.as_str()),
            })
        })
        .collect();
    let input = json!({ "text": ask.text, "agents": candidates });
    // The call is the session's task `classify-N`: a session id keeps a workflow id's rules (the
    // same kind) and `classify-N` a task id's, so neither parse fails; were one to, the rules
    // would decide.
    let (Ok(workflow_id), Ok(task_id)) = (
        WorkflowId::parse(session_id),
        TaskId::parse(&format!("classify-{turn}")),
    ) else {
        return Analysis::by_rules(&ask.text, members);
    };
    // The key carries the tenant like every other: an agent shared by two tenants' registrations
    // must not take one tenant's classification for the other's.
    let task = TaskRef {
        tenant: tenant.clone(),
        workflow_id,
        task_id,
        attempt: 1,
    };
    let call = AgentCall {
        task: &task,
        workflow_id: session_id,
        task_id: &task.task_id,
        attempt: 1,
        capability: CLASSIFY,
        input: &input,
        dependencies: Map::new(),
        memories: Vec::new(),
        context: None,
        timeout_ms: classifier.timeout_ms.min(CLASSIFIER_TIMEOUT_MS),
        stream: None,
    };
    let verdict = match invoker.invoke(classifier, &call).await {
        Ok(answer) => match answer.output.get("agent") {
            Some(Value::Null) | None => Ok(None),
            Some(Value::String(name)) => match members.iter().find(|a| a.name == *name) {
                Some(member) => Ok(Some(member.name.clone())),
                None => Err(format!(
                    "it named `{name}`, which is not one of the session's agents"
                )),
            },
            Some(other) => Err(format!(
                "it named {other}, which is not one of the session's agents"
            )),
        },
        Err(failure) => Err(failure.message),
    };
    match verdict {
        Ok(detected_agent) => Analysis {
            method: if detected_agent.is_some() {
                AnalysisMethod::Classifier
            } else {
                AnalysisMethod::None
            },
            detected_agent,
            matched: Vec::new(),
            classifier: Some(classifier.name.to_string()),
            classifier_error: None,
        },
        Err(why) => {
            tracing::warn!(classifier = %classifier.name, reason = %why, "classifier not used; the rules decide");
            Analysis {
                classifier: Some(classifier.name.to_string()),
                classifier_error: Some(why),
                ..Analysis::by_rules(&ask.text, members)
            }
        }
    }
}

/// What a turn's workflows are built from.
struct TurnShape<'a> {
    session: &'a Session,
    turn: u32,
    plan: &'a TurnPlan,
    agents: &'a [&'a Agent],
    base_input: Value,
    /// The async results the turn shows: in the answering agent's input only.
    async_agent_results: &'a Map<String, Value>,
    /// The summarizer's input, when the turn folds older turns into the summary.
    fold_input: Option<Value>,
    now_ms: i64,
}

/// The turn's workflows: the agents it waits for (sync in dependency order, the primary
/// last, or the specialist alone), and, if any, its async agents. Each task is named after its
/// agent and runs on that agent only.
fn turn_workflows<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    shape: &TurnShape<'_>,
) -> Result<Vec<NewWorkflow>, ApiError> {
    let plan = shape.plan;
    // An agent's name keeps a task id's rules (the same alphabet and length), and the plan
    // names only the session's registered agents: this never fails.
    let task_id = |agent: &str| TaskId::parse(agent).map_err(|e| invalid("agents", e.to_string()));
    let task_ids = |agents: Vec<String>| -> Result<Vec<TaskId>, ApiError> {
        agents.iter().map(|agent| task_id(agent)).collect()
    };
    let task = |agent: &AgentName,
                role: Role,
                depends_on: Vec<String>,
                dependents: Vec<String>|
     -> Result<NewTask, ApiError> {
        let capability = shape
            .agents
            .iter()
            .find(|a| &a.name == agent)
            .and_then(|a| a.capabilities.first().cloned())
            .unwrap_or_default();
        let mut input = shape.base_input.clone();
        input["role"] = json!(role.as_str());
        if matches!(role, Role::Core | Role::Specialist) {
            input["async_agent_results"] = json!(shape.async_agent_results);
        }
        Ok(NewTask {
            id: task_id(agent)?,
            capability,
            // A person is waiting: turns travel in the high band, ahead of batch work.
            profile: TaskProfile {
                priority: Some(Priority::High),
                band: Band::High,
                agent: Some(agent.clone()),
                // The answer streams to the person waiting for it, when its agent streams.
                stream: matches!(role, Role::Core | Role::Specialist),
                turn: Some(TurnTask {
                    session: shape.session.id.clone(),
                    turn: shape.turn,
                    role,
                    generation: shape.session.generation.clone(),
                    summarizes_through: None,
                }),
                ..TaskProfile::default()
            },
            input,
            status: if depends_on.is_empty() {
                TaskStatus::Queued
            } else {
                TaskStatus::Waiting
            },
            dispatch_until_ms: None,
            depends_on: task_ids(depends_on)?,
            dependents: task_ids(dependents)?,
            retry: None,
            fallback: false,
            timeout_ms: None,
        })
    };
    let mut waited = Vec::new();
    if let Some(specialist) = &plan.specialist {
        waited.push(task(specialist, Role::Specialist, Vec::new(), Vec::new())?);
    } else if let Some(core) = &plan.core {
        let mut dependents: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for step in &plan.sync {
            for dependency in &step.depends_on {
                dependents
                    .entry(dependency.as_str())
                    .or_default()
                    .push(step.agent.to_string());
            }
        }
        for step in &plan.sync {
            let mut after = dependents.remove(step.agent.as_str()).unwrap_or_default();
            after.push(core.to_string());
            waited.push(task(
                &step.agent,
                Role::Sync,
                step.depends_on.clone(),
                after,
            )?);
        }
        let all_sync = plan.sync.iter().map(|s| s.agent.to_string()).collect();
        waited.push(task(core, Role::Core, all_sync, Vec::new())?);
    }
    let workflow = |suffix: &str, tasks: Vec<NewTask>| NewWorkflow {
        tenant: tenant.clone(),
        workflow_id: crate::workflows::new_workflow_id(),
        name: format!("session {} turn {}{suffix}", shape.session.id, shape.turn),
        created_at_ms: shape.now_ms,
        dispatch_until_ms: shape.now_ms + api.settings.dispatch_timeout.as_millis() as i64,
        deadline_at_ms: None,
        check_at_ms: shape.now_ms + api.settings.repair_after.as_millis() as i64,
        counted: false,
        tasks,
    };
    let mut workflows = vec![workflow("", waited)];
    let mut background: Vec<NewTask> = plan
        .background
        .iter()
        .map(|agent| task(agent, Role::Async, Vec::new(), Vec::new()))
        .collect::<Result<_, _>>()?;
    if let (Some(summarizer), Some(through), Some(input)) = (
        &plan.summarizer,
        plan.summarizes_through,
        shape.fold_input.clone(),
    ) {
        let mut fold = task(summarizer, Role::Async, Vec::new(), Vec::new())?;
        // Its own id: the summarizer may also be one of the session's async agents.
        let taken = |id: &str| background.iter().any(|t| t.id.as_str() == id);
        let free = [summarizer.to_string(), format!("{summarizer}-summary")]
            .into_iter()
            .find(|id| !taken(id))
            .unwrap_or_default();
        fold.id = task_id(&free)?;
        fold.capability = recall::SUMMARIZE.into();
        fold.input = input;
        if let Some(turn) = fold.profile.turn.as_mut() {
            turn.summarizes_through = Some(through);
        }
        background.push(fold);
    }
    if !background.is_empty() {
        workflows.push(workflow(" (async)", background));
    }
    Ok(workflows)
}

/// Opens a session; without `agents`, every agent with a conversation role takes part.
pub async fn open_session<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    input: SessionInput,
    id: SessionId,
) -> Result<Session, ApiError>
where
    S: SessionStore + AgentRegistry,
{
    let mut session = input
        .into_session(id, now_ms())
        .map_err(|e| ApiError::invalid(e.to_string(), json!({ "field": e.field })))?;
    let registered = api.store.agents(tenant).await?;
    if session.agents.is_empty() {
        let mut conversational: Vec<&Agent> = registered
            .iter()
            .filter(|a| a.conversation.is_some())
            .collect();
        conversational.sort_by(|a, b| a.name.cmp(&b.name));
        session.agents = conversational.iter().map(|a| a.name.to_string()).collect();
    }
    let mut members = Vec::new();
    for name in &session.agents {
        let agent = registered
            .iter()
            .find(|a| &a.name == name)
            .ok_or_else(|| invalid("agents", format!("`{name}` is not a registered agent")))?;
        members.push(agent);
    }
    baton_types::conversation::check_agents(&members)
        .map_err(|e| invalid("agents", e.to_string()))?;
    api.store.create_session(tenant, &session).await?;
    baton_chain::metrics::session_started();
    tracing::info!(%tenant, session = %session.id, "session opened");
    Ok(session)
}

/// The body of `POST /v1/sessions/{id}/resume` (optional).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResumeInput {
    /// The human's answer, shown to the agents with the next turn.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 8000))]
    pub reply: Option<String>,
}

/// `POST /v1/sessions/{id}/resume`.
pub async fn resume<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    session_id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError>
where
    S: SessionStore,
{
    let body: &[u8] = request.body().as_ref();
    // No body, or `null`, is a resume without a reply.
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_body::<Option<ResumeInput>>(request)?
    }
    .unwrap_or(ResumeInput { reply: None });
    if let Some(reply) = &input.reply {
        if reply.trim().is_empty() || reply.chars().count() > MAX_TURN_TEXT_CHARS {
            return Err(invalid(
                "reply",
                format!("a reply has 1 to {MAX_TURN_TEXT_CHARS} characters"),
            ));
        }
    }
    let session_id = &SessionId::parse(session_id).map_err(|_| session_not_found(session_id))?;
    let now = now_ms();
    match api
        .store
        .resume_session(tenant, session_id, input.reply.as_deref(), now)
        .await?
    {
        Resumed::Resumed(session) if !session.is_expired(now) => {
            tracing::info!(%tenant, session = %session_id, "session resumed");
            Ok(json_response(
                200,
                &SessionResumed {
                    session_id: session_id.into(),
                    is_paused: false,
                    requires_human: false,
                    reply: input.reply,
                },
            ))
        }
        Resumed::NotPaused => Err(ApiError::Refused {
            status: 409,
            code: "not_paused",
            message: format!("session `{session_id}` is not paused: there is nothing to resume"),
            details: json!({}),
        }),
        _ => Err(session_not_found(session_id)),
    }
}

/// The body every turn answer has, the `/orchestrate` answer's fields included.
pub fn turn_view(turn: &TurnRecord) -> TurnView {
    let state = turn.state.clone().unwrap_or_default();
    TurnView {
        session_id: (&turn.session_id).into(),
        conversation_id: (&turn.session_id).into(),
        turn: turn.turn,
        status: turn.status,
        response: turn.response.clone(),
        history: turn.history,
        answer: turn.answer.clone(),
        error: turn.error.clone(),
        analysis: turn.analysis.clone(),
        agents: turn.plan.clone(),
        workflow_id: (&turn.workflow_id).into(),
        events: turn.plan.answering().map(|agent| {
            format!(
                "{}/events",
                baton_types::turn::task_url(&turn.workflow_id, agent)
            )
        }),
        stream: turn
            .plan
            .answering()
            .map(|agent| format!("/v1/workflows/{}/events?task={agent}", turn.workflow_id)),
        async_workflow_id: turn.async_workflow_id.as_ref().map(String::from),
        checkpoints: state.checkpoints().to_vec(),
        checkpoint_progress: turn.checkpoint_progress.clone(),
        requires_human: state.flags.requires_human,
        is_paused: state.flags.is_paused,
        task_stack: state.task_stack,
        sync_agent_results: turn.sync_agent_results.clone(),
        async_agent_results: turn.async_agent_results.clone(),
        is_enriched: !turn.sync_agent_results.is_empty(),
        timing_metrics: TimingMetrics {
            timing: turn.timing.clone(),
            response_ms: None,
        },
        created_at: baton_types::clock::rfc3339(turn.created_at_ms),
        answered_at: turn.answered_at_ms.map(baton_types::clock::rfc3339),
        location: None,
    }
}

/// The answer to a paused session's message: no agent ran.
pub fn paused_view(session: &Session, timing: &TurnTiming) -> PausedTurnView {
    PausedTurnView {
        session_id: (&session.id).into(),
        conversation_id: (&session.id).into(),
        turn: None,
        status: Paused::Paused,
        response: None,
        checkpoints: session.state.checkpoints().to_vec(),
        checkpoint_progress: Vec::new(),
        task_stack: session.state.task_stack.clone(),
        sync_agent_results: Map::new(),
        async_agent_results: Map::new(),
        requires_human: session.state.flags.requires_human,
        is_paused: true,
        is_enriched: false,
        timing_metrics: TimingMetrics {
            timing: timing.clone(),
            response_ms: None,
        },
    }
}

/// The session's view: its record, its conversation and its agents' instances.
pub fn session_view(bundle: &SessionBundle) -> SessionView {
    let session = &bundle.session;
    let rfc3339 = baton_types::clock::rfc3339;
    SessionView {
        session_id: (&session.id).into(),
        agents: session.agents.clone(),
        metadata: session.metadata.clone(),
        idle_timeout_s: session.idle_timeout_s,
        created_at: rfc3339(session.created_at_ms),
        last_active_at: rfc3339(session.last_active_at_ms),
        expires_at: rfc3339(session.expires_at_ms()),
        turns: session.turns,
        active_turn: session.active_turn,
        checkpoints: session.state.checkpoints().to_vec(),
        task_stack: session.state.task_stack.clone(),
        recent_turns: recall::kept_turns(&session.state).cloned().collect(),
        history_turns: session.history_turns,
        summary: session.state.summary.clone(),
        requires_human: session.state.flags.requires_human,
        is_paused: session.state.flags.is_paused,
        instances: bundle
            .instances
            .iter()
            .map(|i| InstanceView {
                instance_id: format!("{}#{}", i.agent, session.id),
                agent: i.agent.clone(),
                state: i.state.clone(),
                calls: i.calls,
                last_turn: i.last_turn,
                created_at: rfc3339(i.created_at_ms),
                updated_at: rfc3339(i.updated_at_ms),
            })
            .collect(),
        pending_async_results: bundle.pending.len(),
    }
}

/// A turn's HTTP answer: 200 when it ended, 202 while it runs, with `Server-Timing`.
pub fn turn_response(reply: TurnReply, arrived: Instant) -> Response<Body> {
    let (status, mut body, timing) = match reply {
        TurnReply::Paused(session) => {
            let timing = TurnTiming {
                total_ms: Some(arrived.elapsed().as_millis() as u64),
                ..TurnTiming::default()
            };
            let body = TurnAnswer::Paused(Box::new(paused_view(&session, &timing)));
            (200, body, timing)
        }
        TurnReply::Finished(turn) => {
            let body = TurnAnswer::Turn(Box::new(turn_view(&turn)));
            (200, body, turn.timing)
        }
        TurnReply::Running(turn) => {
            let mut body = turn_view(&turn);
            body.location = Some(format!(
                "/v1/sessions/{}/turns/{}",
                turn.session_id, turn.turn
            ));
            (202, TurnAnswer::Turn(Box::new(body)), turn.timing)
        }
    };
    let total = arrived.elapsed().as_millis() as u64;
    let location = match &mut body {
        TurnAnswer::Turn(turn) => {
            turn.timing_metrics.response_ms = Some(total);
            turn.location.clone()
        }
        TurnAnswer::Paused(paused) => {
            paused.timing_metrics.response_ms = Some(total);
            None
        }
    };
    let mut response = json_response(status, &body);
    if let Ok(value) = server_timing(&timing, total).parse() {
        response.headers_mut().insert("server-timing", value);
    }
    if let Some(location) = location.and_then(|l| l.parse().ok()) {
        response.headers_mut().insert("location", location);
    }
    response
}

/// `Server-Timing`: state load, analysis, save, each agent, the primary, and the whole.
pub fn server_timing(timing: &TurnTiming, total_ms: u64) -> String {
    let mut parts = vec![
        format!("state;dur={}", timing.state_load_ms),
        format!("analysis;dur={}", timing.analysis_ms),
        format!("save;dur={}", timing.save_ms),
    ];
    for (agent, ms) in &timing.agents {
        parts.push(format!("agent-{agent};dur={ms}"));
    }
    if let Some(ms) = timing.primary_ms {
        parts.push(format!("primary;dur={ms}"));
    }
    parts.push(format!("total;dur={total_ms}"));
    parts.join(", ")
}

/// The body of `POST /orchestrate`, the compatibility endpoint: one message of a conversation.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrchestratorQuery {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 8000))]
    pub text: String,
    /// The session; created on first use (a new one when absent).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 36)
    )]
    pub conversation_id: Option<String>,
    pub plan: Option<Value>,
    pub services: Option<Vec<String>>,
    pub individual_id: Option<Value>,
    pub user_profile_id: Option<Value>,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)
    )]
    pub detected_agent: Option<String>,
    pub agent_instance_id: Option<Value>,
    pub call_log_id: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub channel: Option<String>,
}

/// `POST /orchestrate`: a turn of the conversation `conversation_id`, opened if it is new,
/// with the caller's identifiers (`individual_id`, `call_log_id`, …) kept as the session's metadata.
pub async fn orchestrate<S, Q>(
    api: &Api<S, Q>,
    tenant: &TenantId,
    query: OrchestratorQuery,
    arrived: Instant,
) -> Result<TurnReply, ApiError>
where
    S: SessionStore + TurnStore + AgentRegistry + ConfigStore + AdmissionStore,
    Q: TaskQueue,
{
    let ask = TurnInput {
        text: query.text,
        detected_agent: query.detected_agent,
        services: query.services,
        channel: query.channel,
        wait: None,
    }
    .check()?;
    let id = match query.conversation_id {
        Some(id) => SessionId::parse(&id).map_err(|e| invalid("conversation_id", e.to_string()))?,
        None => new_session_id(),
    };
    let exists = match api.store.session(tenant, &id).await? {
        Some(session) if session.is_expired(now_ms()) => {
            // Idle past its time-out and not swept yet: it ends now, and the id starts anew.
            // Only this opening ends: one opened since by another request is kept.
            let generation = session.generation.as_deref();
            if api.store.end_session_of(tenant, &id, generation).await? {
                baton_chain::metrics::session_ended();
            }
            false
        }
        found => found.is_some(),
    };
    if !exists {
        let metadata = json!({
            "plan": query.plan,
            "individual_id": query.individual_id,
            "user_profile_id": query.user_profile_id,
            "agent_instance_id": query.agent_instance_id,
            "call_log_id": query.call_log_id,
        });
        let input = SessionInput {
            metadata: Some(metadata),
            ..SessionInput::default()
        };
        match open_session(api, tenant, input, id.clone()).await {
            // Another request opened it first.
            Ok(_) | Err(ApiError::Conflict(_)) => {}
            Err(other) => return Err(other),
        }
    }
    run_turn(api, tenant, &id, ask, arrived).await
}
