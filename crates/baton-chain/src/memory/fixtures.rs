//! What the unit tests over the memory store share: settings, agents, workflows, SQS events,
//! an agent invoker that answers from a script, and a harness that runs the chain's steps.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};

use super::locked;
use crate::attempt::{conclude_attempt, AttemptConclusion, AttemptRun, Concluded};
use crate::config::Settings;
use crate::invoker::{AgentAnswer, AgentCall, AgentInvoker};
use crate::store::{AttemptHolder, NewTask, NewWorkflow};
use baton_types::agent::Agent;
use baton_types::control::{decide, redrive_plan, ControlAction, ControlChange, ControlEvent};
use baton_types::ids::{AgentName, TaskId, TenantId};
use baton_types::messages::{ExecuteMessage, RouteMessage, TaskRef, FORMAT_VERSION};
use baton_types::outcome::{FailureKind, TaskFailure};
use baton_types::records::{TaskRecord, WorkflowView};
use baton_types::retry::RetryPolicy;
use baton_types::routing::{RouteDecision, RoutingStrategy};
use baton_types::task::{TaskProfile, TaskStatus};

/// The tenant of every fixture.
pub const TENANT: &str = "t";

/// [`TENANT`], checked, as the ports take it.
pub fn tenant() -> TenantId {
    TENANT.parse().expect("the fixture tenant is valid")
}
/// The capability every fixture task asks for and every fixture agent has.
pub const CAPABILITY: &str = "c";
/// How long after its creation a fixture workflow's queued roots may wait.
pub const DISPATCH_MS: i64 = 60_000;

/// The settings the functions run with, with the defaults of everything optional.
/// A checked id from a fixture's literal: tests name ids as text, the ports take them typed.
pub fn id<T>(text: &str) -> T
where
    T: std::str::FromStr,
    T::Err: std::fmt::Debug,
{
    text.parse().expect("a fixture's id is valid")
}

pub fn settings() -> Settings {
    Settings::from_lookup(|name| {
        let value = match name {
            "STATE_TABLE" => "state",
            "MEMORY_TABLE" => "memory",
            "ROUTE_QUEUE_URL" => "route",
            "EXECUTE_QUEUE_URL" => "execute",
            "LEARN_QUEUE_URL" => "learn",
            _ => return None,
        };
        Some(value.to_string())
    })
    .expect("the fixture's settings are complete")
}

/// An enabled http agent with `capabilities`, a one-second time-out and no limits.
pub fn agent(name: &str, capabilities: &[&str]) -> Agent {
    serde_json::from_value(json!({
        "name": name,
        "kind": "http",
        "endpoint": format!("https://{name}.agents.test/run"),
        "capabilities": capabilities,
        "timeout_ms": 1_000,
        "enabled": true,
        "version": 1,
        "created_at_ms": 0,
        "updated_at_ms": 0,
    }))
    .expect("the fixture agent is well formed")
}

/// A workflow of `tasks` (each with its dependencies, in submission order), created at
/// `now_ms`: its roots queued, the others waiting, every task asking for [`CAPABILITY`].
pub fn workflow(id: &str, tasks: &[(&str, &[&str])], now_ms: i64) -> NewWorkflow {
    let dependents = |of: &str| -> Vec<TaskId> {
        tasks
            .iter()
            .filter(|(_, deps)| deps.contains(&of))
            .map(|(task, _)| self::id(task))
            .collect()
    };
    NewWorkflow {
        tenant: tenant(),
        workflow_id: self::id(id),
        name: format!("workflow {id}"),
        created_at_ms: now_ms,
        dispatch_until_ms: now_ms + DISPATCH_MS,
        deadline_at_ms: None,
        check_at_ms: now_ms + 300_000,
        counted: true,
        tasks: tasks
            .iter()
            .map(|(task, deps)| NewTask {
                id: self::id(task),
                capability: CAPABILITY.into(),
                profile: TaskProfile::default(),
                input: json!({ "task": task }),
                depends_on: deps.iter().map(|d| self::id(d)).collect(),
                dependents: dependents(task),
                status: if deps.is_empty() {
                    TaskStatus::Queued
                } else {
                    TaskStatus::Waiting
                },
                dispatch_until_ms: None,
                retry: None,
                fallback: true,
                timeout_ms: None,
            })
            .collect(),
    }
}

/// Attempt `attempt` of a fixture workflow's task.
pub fn task_ref(workflow_id: &str, task_id: &str, attempt: u32) -> TaskRef {
    TaskRef {
        tenant: tenant(),
        workflow_id: id(workflow_id),
        task_id: id(task_id),
        attempt,
    }
}

/// Stores the fixture workflow `workflow_id` of `tasks`, created at `now_ms`, and registers
/// [`AGENT`] for [`CAPABILITY`]: what a handler's test starts from.
pub async fn seed(
    store: &super::MemoryStore,
    workflow_id: &str,
    tasks: &[(&str, &[&str])],
    now_ms: i64,
) {
    use crate::store::{AgentRegistry, WorkflowStore};
    let stored = store
        .create_workflow(&workflow(workflow_id, tasks, now_ms))
        .await;
    let registered = store
        .replace_agent(&tenant(), &agent(AGENT, &[CAPABILITY]))
        .await;
    stored
        .and(registered)
        .expect("the memory store takes the fixtures");
}

/// The first route message of `task`, as orchestrate or a release sends it.
pub fn route_message(task: TaskRef) -> RouteMessage {
    RouteMessage::new(task, CAPABILITY, TaskProfile::default())
}

/// `task` routed to [`AGENT`], as route sends it to execute-agent.
pub fn execute_message(task: TaskRef) -> ExecuteMessage {
    ExecuteMessage {
        v: FORMAT_VERSION,
        task,
        capability: CAPABILITY.into(),
        profile: TaskProfile::default(),
        route: RouteDecision {
            primary: agent_name(),
            fallbacks: Vec::new(),
            strategy: RoutingStrategy::default(),
            confidence: 1.0,
            reasoning: "the fixture's one agent".into(),
            probe: false,
        },
        waits: 0,
        dispatch: 0,
        ready_at_ms: None,
    }
}

/// An SQS event (as JSON, to decode as `aws_lambda_events`' `SqsEvent`) delivering
/// `messages`, with ids `m0`, `m1`, … and no send time.
pub fn sqs_event<M: Serialize>(messages: &[M]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            json!({
                "messageId": format!("m{i}"),
                "body": serde_json::to_string(message).expect("messages encode"),
            })
        })
        .collect();
    json!({ "Records": records })
}

/// An agent invoker that answers each call with the next scripted answer, and with
/// `{"ok": true}` once the script is used up. It keeps the calls it was given.
#[derive(Debug, Default)]
pub struct ScriptedInvoker {
    script: Mutex<VecDeque<Result<Value, TaskFailure>>>,
    calls: Mutex<Vec<(String, TaskRef, Value)>>,
}

impl ScriptedInvoker {
    pub fn new(script: impl IntoIterator<Item = Result<Value, TaskFailure>>) -> Self {
        ScriptedInvoker {
            script: Mutex::new(script.into_iter().collect()),
            calls: Mutex::default(),
        }
    }

    /// Each call as (agent, attempt, dependencies' outputs), in order.
    pub fn calls(&self) -> Vec<(String, TaskRef, Value)> {
        locked(&self.calls).clone()
    }
}

#[async_trait]
impl AgentInvoker for ScriptedInvoker {
    async fn invoke(
        &self,
        agent: &Agent,
        call: &AgentCall<'_>,
    ) -> Result<AgentAnswer, TaskFailure> {
        let dependencies = Value::Object(call.dependencies.clone());
        locked(&self.calls).push((agent.name.to_string(), call.task.clone(), dependencies));
        let answer = locked(&self.script)
            .pop_front()
            .unwrap_or_else(|| Ok(json!({ "ok": true })));
        answer.map(AgentAnswer::reported)
    }
}

/// A memory store and queue with the fixture settings: what the chain's steps run on.
#[derive(Debug)]
pub struct Harness {
    pub store: super::MemoryStore,
    pub queue: super::MemoryQueue,
    pub settings: Settings,
}

/// The agent the harness's attempts run on.
pub const AGENT: &str = "a1";

/// [`AGENT`] as the name the chain carries.
pub fn agent_name() -> AgentName {
    AgentName::parse(AGENT).expect("a valid agent name")
}

impl super::MemoryStore {
    /// The fixture tenant's task, which must exist.
    pub async fn stored_task(&self, workflow_id: &str, task_id: &str) -> TaskRecord {
        use crate::store::WorkflowStore;
        self.task(&tenant(), &id(workflow_id), &id(task_id))
            .await
            .expect("the memory store answers")
            .expect("the task exists")
    }

    /// The fixture tenant's workflow, which must exist.
    pub async fn stored_view(&self, workflow_id: &str) -> WorkflowView {
        use crate::store::WorkflowStore;
        self.workflow(&tenant(), &id(workflow_id))
            .await
            .expect("the memory store answers")
            .expect("the workflow exists")
    }
}

impl Harness {
    /// A harness holding the fixture workflow `id` of `tasks`, created at `now_ms`.
    pub async fn with_workflow(id: &str, tasks: &[(&str, &[&str])], now_ms: i64) -> Self {
        use crate::store::WorkflowStore;
        let harness = Harness {
            store: super::MemoryStore::new(),
            queue: super::MemoryQueue::new(),
            settings: settings(),
        };
        harness
            .store
            .create_workflow(&workflow(id, tasks, now_ms))
            .await
            .expect("the fixture workflow is stored");
        harness
    }

    pub async fn task(&self, workflow_id: &str, task_id: &str) -> TaskRecord {
        self.store.stored_task(workflow_id, task_id).await
    }

    pub async fn view(&self, workflow_id: &str) -> WorkflowView {
        self.store.stored_view(workflow_id).await
    }

    /// Claims the task's current attempt on [`AGENT`] under `token`.
    pub async fn claim(
        &self,
        workflow_id: &str,
        task_id: &str,
        token: &str,
        now_ms: i64,
    ) -> TaskRef {
        use crate::store::{ClaimOutcome, WorkflowStore};
        let task = self.task(workflow_id, task_id).await.task_ref();
        let lease = now_ms + 10_000;
        match self
            .store
            .claim_task(&task, &agent_name(), None, token, lease, now_ms)
            .await
        {
            Ok(ClaimOutcome::Claimed(_)) => task,
            other => panic!("claim of {task_id} refused: {other:?}"),
        }
    }

    /// Ends `task`'s attempt held by `token` with `result`, under the default retry policy.
    pub async fn conclude(
        &self,
        task: &TaskRef,
        token: &str,
        result: Result<Value, TaskFailure>,
        now_ms: i64,
    ) -> Concluded {
        self.try_conclude(task, token, result, now_ms)
            .await
            .expect("the memory store and queue answer")
    }

    /// [`Harness::conclude`], with the chain's error when a step failed.
    pub async fn try_conclude(
        &self,
        task: &TaskRef,
        token: &str,
        result: Result<Value, TaskFailure>,
        now_ms: i64,
    ) -> Result<Concluded, crate::error::ChainError> {
        conclude_on(&self.store, &self.queue, task, token, result, now_ms).await
    }

    /// Claims the task's current attempt and ends it with `result`.
    pub async fn run(
        &self,
        workflow_id: &str,
        task_id: &str,
        result: Result<Value, TaskFailure>,
        now_ms: i64,
    ) -> Concluded {
        let token = format!("claim-{task_id}-{now_ms}");
        let task = self.claim(workflow_id, task_id, &token, now_ms).await;
        self.conclude(&task, &token, result, now_ms).await
    }

    /// Applies `action` to the workflow's record as the API does (its tasks are left to
    /// [`crate::hold::reconcile`]), and returns the workflow as it is then.
    pub async fn control(
        &self,
        workflow_id: &str,
        action: ControlAction,
        now_ms: i64,
    ) -> WorkflowView {
        use crate::store::{ControlApplied, ControlWrite, WorkflowControls};
        let view = self.view(workflow_id).await;
        let change = decide(&view.workflow.control_state(), action).expect("the control applies");
        let Some(event) = change.event() else {
            return view;
        };
        let drive = match change {
            ControlChange::Redrive { drive } => Some(drive),
            _ => None,
        };
        let rerun: Vec<TaskId> = drive
            .map(|drive| redrive_plan(&crate::hold::redrive_tasks(&view), drive))
            .into_iter()
            .flatten()
            .map(|reset| reset.id)
            .collect();
        let event = ControlEvent {
            event,
            at_ms: now_ms,
            force: matches!(action, ControlAction::Cancel { force: true }),
            drive,
            request: format!("request-{now_ms}"),
        };
        let write = ControlWrite {
            change,
            event: &event,
            rerun: &rerun,
            deadline_at_ms: None,
            check_at_ms: now_ms + 60_000,
        };
        match self.store.control_workflow(&view.workflow, &write).await {
            Ok(ControlApplied::Applied(_)) => self.view(workflow_id).await,
            other => panic!("the control was not applied: {other:?}"),
        }
    }

    /// The ids of the tasks sent to routing since the last drain, in order.
    pub fn routed(&self) -> Vec<String> {
        self.queue
            .drain_route()
            .into_iter()
            .map(|(m, _)| m.task.task_id.into_string())
            .collect()
    }
}

/// Ends `task`'s attempt held by `token` with `result` on [`AGENT`], under the default retry
/// policy and the fixture settings, as execute-agent does after its call.
pub async fn conclude_on(
    store: &super::MemoryStore,
    queue: &super::MemoryQueue,
    task: &TaskRef,
    token: &str,
    result: Result<Value, TaskFailure>,
    now_ms: i64,
) -> Result<Concluded, crate::error::ChainError> {
    let conclusion = AttemptConclusion {
        task,
        capability: CAPABILITY,
        holder: AttemptHolder::Claim(token),
        result,
        run: AttemptRun {
            agent: Some(agent_name()),
            started_at_ms: Some(now_ms),
            claims: 1,
            ..AttemptRun::default()
        },
        policy: RetryPolicy::default(),
        prefer: Vec::new(),
        prior_attempts: 0,
        now_ms,
    };
    conclude_attempt(store, queue, &settings(), conclusion).await
}

/// A failure that a retry may mend.
pub fn retryable_failure() -> TaskFailure {
    TaskFailure::new(FailureKind::Timeout, "the agent did not answer in time")
}

/// A failure that no retry mends.
pub fn final_failure() -> TaskFailure {
    TaskFailure::new(FailureKind::InvalidInput, "the agent refused the input")
}

/// A health prober that every agent answers; it counts its probes.
#[derive(Debug, Default)]
pub struct AnsweringProber {
    probes: Mutex<u32>,
}

impl AnsweringProber {
    pub fn probes(&self) -> u32 {
        *locked(&self.probes)
    }
}

#[async_trait]
impl crate::prober::HealthProber for AnsweringProber {
    async fn probe(&self, _url: &str) -> baton_types::health::ProbeResult {
        *locked(&self.probes) += 1;
        baton_types::health::ProbeResult::Answered { latency_ms: 5 }
    }
}
