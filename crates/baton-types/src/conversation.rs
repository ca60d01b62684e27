//! Conversation turns: how a message is analysed, which agents answer it and
//! in what order, and how their answers move the conversation's state (checkpoints, the task
//! stack, the human-intervention flag). Pure logic, no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::agent::Agent;
use super::dag::{Dag, DagError, TaskSpec};
use super::ids::{AgentName, SessionId};
use super::roles::Role;

/// The longest message a turn takes, in characters.
pub const MAX_TURN_TEXT_CHARS: usize = 8_000;
pub const MAX_CHANNEL_CHARS: usize = 64;
/// How long a turn's HTTP call waits for the answer by default, and at most: API Gateway
/// gives up on an integration after 29 s.
pub const DEFAULT_WAIT_S: f64 = 25.0;
pub const MAX_WAIT_S: f64 = 28.0;
pub const MAX_CHECKPOINTS: usize = 32;
pub const MAX_STACK_TASKS: usize = 16;
/// The capabilities that mark an agent as the checkpoints' generator or evaluator.
pub const GENERATE_CHECKPOINTS: &str = "checkpoints.generate";
pub const EVALUATE_CHECKPOINTS: &str = "checkpoints.evaluate";
/// The capability of an agent that analyses messages for the tenant.
pub const CLASSIFY: &str = "classify";

/// Which turn of which session a task belongs to: carried on the turn's tasks, so that the end
/// of one updates its session without another read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnTask {
    pub session: SessionId,
    pub turn: u32,
    pub role: Role,
    /// The generation of the session that started the turn: a task of an earlier opening of
    /// the same id changes nothing of a later one. None on tasks from before generations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    /// The summarizer's task: it folds the turns up to this one into the running summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summarizes_through: Option<u32>,
}

/// How the agent that answers was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AnalysisMethod {
    /// The client named `detected_agent`.
    Client,
    /// The tenant's `classify` agent answered.
    Classifier,
    /// The keyword and task-type rules matched.
    Rules,
    /// Nothing was detected: the primary answers.
    None,
}

/// The query analysis of one turn, recorded with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Analysis {
    pub method: AnalysisMethod,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub detected_agent: Option<AgentName>,
    /// The keywords and task types the rules matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<String>,
    /// The classifier asked, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
    /// Why the classifier's answer was not used, when it was asked and the rules decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_error: Option<String>,
}

impl Analysis {
    pub fn by_client(agent: &AgentName) -> Self {
        Analysis {
            method: AnalysisMethod::Client,
            detected_agent: Some(agent.clone()),
            matched: Vec::new(),
            classifier: None,
            classifier_error: None,
        }
    }

    /// The rules' verdict over `agents` (those with keywords or task types take part).
    pub fn by_rules(text: &str, agents: &[&Agent]) -> Self {
        let words = words(text);
        let best = agents
            .iter()
            .map(|agent| (agent, matched_terms(&words, agent)))
            .filter(|(_, matched)| !matched.is_empty())
            // The first of equals wins: `max_by_key` keeps the last, so compare reversed order.
            .fold(
                None::<(&&Agent, Vec<String>)>,
                |best, candidate| match best {
                    Some(b) if b.1.len() >= candidate.1.len() => Some(b),
                    _ => Some(candidate),
                },
            );
        match best {
            Some((agent, matched)) => Analysis {
                method: AnalysisMethod::Rules,
                detected_agent: Some(agent.name.clone()),
                matched,
                classifier: None,
                classifier_error: None,
            },
            None => Analysis {
                method: AnalysisMethod::None,
                detected_agent: None,
                matched: Vec::new(),
                classifier: None,
                classifier_error: None,
            },
        }
    }
}

/// Lower-case words of a text, for matching.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The agent's keywords and task types found in `words`. A keyword matches a word, its plural,
/// or a run of words; a task type matches when all its parts (split on `_`, `.`, `-`) occur.
fn matched_terms(words: &[String], agent: &Agent) -> Vec<String> {
    let has_word = |w: &str| {
        words
            .iter()
            .any(|x| x == w || x.strip_suffix('s') == Some(w))
    };
    let has_phrase = |phrase: &[String]| {
        phrase.len() > 1 && words.windows(phrase.len()).any(|window| window == phrase)
    };
    let mut matched = Vec::new();
    for keyword in &agent.keywords {
        let parts = self::words(keyword);
        let hit = match parts.as_slice() {
            [] => false,
            [one] => has_word(one),
            many => has_phrase(many),
        };
        if hit {
            matched.push(keyword.clone());
        }
    }
    for task_type in &agent.task_types {
        let parts: Vec<String> = task_type
            .split(['_', '.', '-'])
            .filter(|p| !p.is_empty())
            .map(str::to_lowercase)
            .collect();
        if !parts.is_empty() && parts.iter().all(|p| has_word(p)) {
            matched.push(task_type.clone());
        }
    }
    matched
}

/// Which agents answer one turn, in what order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TurnPlan {
    /// A detected specialist answers alone; None: the core agent answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub specialist: Option<AgentName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub core: Option<AgentName>,
    /// Sync agents in the session's order, each with the sync agents it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync: Vec<SyncStep>,
    /// Async agents, started with the turn and not waited for.
    #[serde(rename = "async", default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub background: Vec<AgentName>,
    /// The tenant's `summarize` agent, which keeps the conversation's running summary: older
    /// turns wait for it rather than being dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub summarizer: Option<AgentName>,
    /// This turn also calls the summarizer, in the background, to fold the turns up to this
    /// one into the summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summarizes_through: Option<u32>,
    /// The agents among those waited for whose answers may set the checkpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub generators: Vec<AgentName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncStep {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub agent: AgentName,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl TurnPlan {
    /// The agent whose answer is the turn's answer.
    pub fn answering(&self) -> Option<&str> {
        self.specialist.as_deref().or(self.core.as_deref())
    }

    /// Every agent the turn waits for, in the order they may start.
    pub fn waited_for(&self) -> Vec<&str> {
        self.sync
            .iter()
            .map(|s| s.agent.as_str())
            .chain(self.answering())
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no core agent takes part: give one of the session's agents the role `core`")]
    NoCore,
    #[error("the session's agents depend on each other in a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Plans a turn over the session's agents (in the session's order). A detected agent whose
/// role is `specialist` (or that has no conversation role) answers alone; any other detection
/// is only recorded. `services`, when given, limits the helpers to those named.
pub fn plan_turn(
    agents: &[&Agent],
    detected: Option<&str>,
    services: Option<&[AgentName]>,
) -> Result<TurnPlan, PlanError> {
    let role_of = |agent: &Agent| agent.conversation.as_ref().map(|c| c.role);
    if let Some(agent) = detected.and_then(|d| agents.iter().find(|a| a.name == d)) {
        if matches!(role_of(agent), None | Some(Role::Specialist)) {
            return Ok(TurnPlan {
                specialist: Some(agent.name.clone()),
                core: None,
                sync: Vec::new(),
                background: Vec::new(),
                generators: generators(&[agent]),
                summarizer: None,
                summarizes_through: None,
            });
        }
    }
    let core = agents
        .iter()
        .find(|a| role_of(a) == Some(Role::Core))
        .ok_or(PlanError::NoCore)?;
    let chosen = |agent: &&&Agent| services.is_none_or(|s| s.contains(&agent.name));
    let helpers = |role: Role| {
        agents
            .iter()
            .filter(move |a| role_of(a) == Some(role))
            .filter(chosen)
    };
    let sync_agents: Vec<&Agent> = helpers(Role::Sync).copied().collect();
    let sync = steps(&sync_agents);
    check_order(&sync)?;
    let waited: Vec<&Agent> = sync_agents.iter().copied().chain([*core]).collect();
    Ok(TurnPlan {
        specialist: None,
        core: Some(core.name.clone()),
        sync,
        background: helpers(Role::Async).map(|a| a.name.clone()).collect(),
        generators: generators(&waited),
        summarizer: None,
        summarizes_through: None,
    })
}

fn generators(agents: &[&Agent]) -> Vec<AgentName> {
    agents
        .iter()
        .filter(|a| a.has_capability(GENERATE_CHECKPOINTS))
        .map(|a| a.name.clone())
        .collect()
}

/// Checks that a session's agents have no dependency cycle among them.
pub fn check_agents(agents: &[&Agent]) -> Result<(), PlanError> {
    check_order(&steps(agents))
}

/// Each agent with its dependencies among `agents` (others are left out).
fn steps(agents: &[&Agent]) -> Vec<SyncStep> {
    agents
        .iter()
        .map(|agent| SyncStep {
            agent: agent.name.clone(),
            depends_on: agent
                .conversation
                .iter()
                .flat_map(|c| &c.depends_on)
                .filter(|d| agents.iter().any(|a| &a.name == *d))
                .cloned()
                .collect(),
        })
        .collect()
}

fn check_order(steps: &[SyncStep]) -> Result<(), PlanError> {
    let specs: Vec<TaskSpec> = steps
        .iter()
        .map(|s| TaskSpec::shape(&s.agent, "conversation", s.depends_on.clone()))
        .collect();
    if specs.is_empty() {
        return Ok(());
    }
    match Dag::build(&specs) {
        Err(DagError::Cycle { path }) => Err(PlanError::Cycle(path)),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStatus {
    Pending,
    InProgress,
    Complete,
}

impl CheckpointStatus {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(CheckpointStatus::Pending),
            "in_progress" => Some(CheckpointStatus::InProgress),
            "complete" | "completed" => Some(CheckpointStatus::Complete),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    pub id: String,
    pub description: String,
    pub status: CheckpointStatus,
}

/// A checkpoint as a client gives it: a description, or an id and a description.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum CheckpointInput {
    Description(String),
    Full {
        id: Option<String>,
        description: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Main,
    Support,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StackTaskStatus {
    Active,
    Complete,
}

/// One task on the conversation's stack, with its own checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackTask {
    pub id: String,
    pub name: String,
    pub kind: TaskKind,
    pub status: StackTaskStatus,
    pub checkpoints: Vec<Checkpoint>,
}

/// The summary of a conversation's older turns, kept by the tenant's `summarize` agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunningSummary {
    /// The summary covers the turns up to this one.
    pub through_turn: u32,
    pub text: String,
    /// The agent that wrote it.
    pub agent: String,
}

/// One past turn, as agents see it in their context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TurnSummary {
    pub turn: u32,
    pub text: String,
    pub response: Option<String>,
    pub agents: Vec<String>,
    /// What a human answered when the session was resumed after this turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_reply: Option<String>,
}

/// What the conversation carries from turn to turn. Each part is stored on its own, so a
/// turn writes only the parts it changed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConversationState {
    pub task_stack: Vec<StackTask>,
    /// The turns agents receive word for word, oldest first: those the summary does not
    /// cover, within the session's `history_turns`.
    pub recent: Vec<TurnSummary>,
    /// The summary of the older turns, when the tenant has a `summarize` agent.
    pub summary: Option<RunningSummary>,
    pub flags: Flags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Flags {
    pub requires_human: bool,
    pub is_paused: bool,
}

/// One checkpoint's move in a turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressChange {
    pub task: String,
    pub checkpoint: String,
    pub from: CheckpointStatus,
    pub to: CheckpointStatus,
    /// The agent that moved it; None when the flow advanced to the next checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// One agent's answer in a turn, in the order the agents ran.
#[derive(Debug, Clone, Copy)]
pub struct AgentAnswer<'a> {
    pub agent: &'a str,
    /// The agent may set the checkpoints (it has `checkpoints.generate`).
    pub generates: bool,
    pub output: &'a Value,
}

pub const MAIN_TASK: &str = "main";

impl ConversationState {
    /// A new conversation: the main task, with the client's checkpoints if it gave any.
    pub fn open(task_name: &str, checkpoints: Vec<Checkpoint>) -> Self {
        let mut state = ConversationState {
            task_stack: vec![StackTask {
                id: MAIN_TASK.into(),
                name: task_name.into(),
                kind: TaskKind::Main,
                status: StackTaskStatus::Active,
                checkpoints,
            }],
            ..ConversationState::default()
        };
        state.advance(&mut Vec::new());
        state
    }

    /// The task being worked on: the newest active task on the stack.
    pub fn current_task(&self) -> Option<&StackTask> {
        self.task_stack
            .iter()
            .rev()
            .find(|t| t.status == StackTaskStatus::Active)
    }

    fn current_task_mut(&mut self) -> Option<&mut StackTask> {
        self.task_stack
            .iter_mut()
            .rev()
            .find(|t| t.status == StackTaskStatus::Active)
    }

    /// The current task's checkpoints.
    pub fn checkpoints(&self) -> &[Checkpoint] {
        self.current_task().map_or(&[], |t| &t.checkpoints)
    }

    /// Applies the agents' answers of one turn: generated checkpoints, checkpoint progress,
    /// pushed support tasks and the human-intervention flag; then moves the flow on. Returns
    /// every checkpoint move.
    pub fn apply(&mut self, answers: &[AgentAnswer<'_>]) -> Vec<ProgressChange> {
        let mut changes = Vec::new();
        for answer in answers {
            let output = answer.output;
            if answer.generates && self.task_stack.iter().all(|t| t.checkpoints.is_empty()) {
                if let Some(task) = self.current_task_mut() {
                    task.checkpoints = generated(&task.id, output.get("checkpoints"));
                }
            }
            for (id, status) in progress_of(output.get("checkpoint_progress")) {
                self.mark(&id, status, Some(answer.agent), &mut changes);
            }
            if let Some(push) = output.get("push_task") {
                self.push(push);
            }
            if output.get("requires_human").and_then(Value::as_bool) == Some(true) {
                self.flags.requires_human = true;
                self.flags.is_paused = true;
            }
            self.advance(&mut changes);
        }
        changes
    }

    /// Moves a checkpoint of the current task forward (never back).
    fn mark(
        &mut self,
        id: &str,
        to: CheckpointStatus,
        by: Option<&str>,
        changes: &mut Vec<ProgressChange>,
    ) {
        let Some(task) = self.current_task_mut() else {
            return;
        };
        let task_id = task.id.clone();
        if let Some(checkpoint) = task.checkpoints.iter_mut().find(|c| c.id == id) {
            if to > checkpoint.status {
                changes.push(ProgressChange {
                    task: task_id,
                    checkpoint: checkpoint.id.clone(),
                    from: checkpoint.status,
                    to,
                    by: by.map(str::to_string),
                });
                checkpoint.status = to;
            }
        }
    }

    fn push(&mut self, push: &Value) {
        let Some(name) = push.get("name").and_then(Value::as_str) else {
            return;
        };
        if self.task_stack.len() >= MAX_STACK_TASKS {
            return;
        }
        let id = format!("support-{}", self.task_stack.len());
        let checkpoints = generated(&id, push.get("checkpoints"));
        self.task_stack.push(StackTask {
            id,
            name: name.chars().take(200).collect(),
            kind: TaskKind::Support,
            status: StackTaskStatus::Active,
            checkpoints,
        });
    }

    /// Completes tasks whose checkpoints are all complete (the next active task becomes
    /// current) and puts the current task's first open checkpoint in progress.
    fn advance(&mut self, changes: &mut Vec<ProgressChange>) {
        loop {
            let Some(task) = self.current_task_mut() else {
                return;
            };
            let done = !task.checkpoints.is_empty()
                && task
                    .checkpoints
                    .iter()
                    .all(|c| c.status == CheckpointStatus::Complete);
            if !done {
                let task_id = task.id.clone();
                if let Some(open) = task
                    .checkpoints
                    .iter_mut()
                    .find(|c| c.status != CheckpointStatus::Complete)
                {
                    if open.status == CheckpointStatus::Pending {
                        changes.push(ProgressChange {
                            task: task_id,
                            checkpoint: open.id.clone(),
                            from: CheckpointStatus::Pending,
                            to: CheckpointStatus::InProgress,
                            by: None,
                        });
                        open.status = CheckpointStatus::InProgress;
                    }
                }
                return;
            }
            task.status = StackTaskStatus::Complete;
        }
    }
}

/// Checkpoints from a list of descriptions (or `{id?, description}` objects).
fn generated(task_id: &str, list: Option<&Value>) -> Vec<Checkpoint> {
    let Some(Value::Array(items)) = list else {
        return Vec::new();
    };
    items
        .iter()
        .take(MAX_CHECKPOINTS)
        .filter_map(|item| serde_json::from_value::<CheckpointInput>(item.clone()).ok())
        .enumerate()
        .map(|(i, input)| checkpoint(task_id, i, input))
        .collect()
}

/// A checkpoint from its input, numbered within its task when it has no id.
pub fn checkpoint(task_id: &str, position: usize, input: CheckpointInput) -> Checkpoint {
    let (id, description) = match input {
        CheckpointInput::Description(d) => (None, d),
        CheckpointInput::Full { id, description } => (id, description),
    };
    Checkpoint {
        id: id.unwrap_or_else(|| format!("{task_id}-{}", position + 1)),
        description: description.chars().take(500).collect(),
        status: CheckpointStatus::Pending,
    }
}

/// `checkpoint_progress` as an agent answers it: `{id: status}` or `[{id|checkpoint, status}]`.
fn progress_of(value: Option<&Value>) -> Vec<(String, CheckpointStatus)> {
    let pair = |id: Option<&str>, status: Option<&Value>| {
        Some((id?.to_string(), CheckpointStatus::parse(status?.as_str()?)?))
    };
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(id, status)| pair(Some(id), Some(status)))
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| {
                let id = item
                    .get("id")
                    .or_else(|| item.get("checkpoint"))
                    .and_then(Value::as_str);
                pair(id, item.get("status"))
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentRegistration;
    use serde_json::json;

    fn agent(registration: Value) -> Agent {
        let mut body = json!({ "endpoint": "http://127.0.0.1:1/", "capabilities": ["talk"] });
        for (k, v) in registration.as_object().unwrap() {
            body[k] = v.clone();
        }
        serde_json::from_value::<AgentRegistration>(body)
            .unwrap()
            .into_agent(0)
            .unwrap()
    }

    fn chain() -> Vec<Agent> {
        vec![
            agent(json!({ "name": "primary", "conversation": { "role": "core" } })),
            agent(json!({ "name": "privacy", "conversation": { "role": "sync" } })),
            agent(json!({ "name": "followup", "conversation": { "role": "sync" } })),
            agent(
                json!({ "name": "nutrition", "conversation": { "role": "sync", "depends_on": ["privacy", "followup", "absent"] } }),
            ),
            agent(json!({ "name": "history", "conversation": { "role": "async" } })),
            agent(json!({
                "name": "sleep", "conversation": { "role": "specialist" },
                "keywords": ["Sleep", "bed time"], "task_types": ["sleep_advice"],
            })),
        ]
    }

    #[test]
    fn rules_match_words_plurals_phrases_and_task_types_and_the_first_of_equals_wins() {
        let agents = chain();
        let refs: Vec<&Agent> = agents.iter().collect();
        let a = Analysis::by_rules("Any tips for my SLEEPS?", &refs);
        assert_eq!(a.method, AnalysisMethod::Rules);
        assert_eq!(a.detected_agent.as_deref(), Some("sleep"));
        assert_eq!(a.matched, vec!["sleep"]);
        let a = Analysis::by_rules("what is a good bed time, some sleep advice", &refs);
        assert_eq!(a.matched, vec!["sleep", "bed time", "sleep_advice"]);
        assert_eq!(
            Analysis::by_rules("bedtime", &refs).method,
            AnalysisMethod::None,
            "a phrase needs its words"
        );
        let other = agent(json!({ "name": "coach", "keywords": ["sleep"] }));
        let tied: Vec<&Agent> = vec![&other, &agents[5]];
        assert_eq!(
            Analysis::by_rules("sleep", &tied).detected_agent.as_deref(),
            Some("coach")
        );
    }

    #[test]
    fn the_plan_orders_sync_agents_by_their_dependencies_and_a_specialist_answers_alone() {
        let agents = chain();
        let refs: Vec<&Agent> = agents.iter().collect();
        let plan = plan_turn(&refs, None, None).unwrap();
        assert_eq!(plan.core.as_deref(), Some("primary"));
        let nutrition = plan.sync.iter().find(|s| s.agent == "nutrition").unwrap();
        assert_eq!(
            nutrition.depends_on,
            vec!["privacy", "followup"],
            "absent dropped"
        );
        assert_eq!(plan.background, vec!["history"]);
        assert_eq!(plan.waited_for().last(), Some(&"primary"));

        let alone = plan_turn(&refs, Some("sleep"), None).unwrap();
        assert_eq!(alone.specialist.as_deref(), Some("sleep"));
        assert!(alone.sync.is_empty() && alone.background.is_empty());
        let member = plan_turn(&refs, Some("privacy"), None).unwrap();
        assert_eq!(
            member.core.as_deref(),
            Some("primary"),
            "a chain member is only recorded"
        );

        let services = [AgentName::parse("nutrition").unwrap()];
        let limited = plan_turn(&refs, None, Some(&services)).unwrap();
        assert_eq!(limited.sync.len(), 1);
        assert!(limited.sync[0].depends_on.is_empty());
        assert!(limited.background.is_empty());

        let no_core: Vec<&Agent> = refs[1..].to_vec();
        assert_eq!(plan_turn(&no_core, None, None), Err(PlanError::NoCore));
    }

    #[test]
    fn a_dependency_cycle_is_found_with_its_path() {
        let a =
            agent(json!({ "name": "a", "conversation": { "role": "sync", "depends_on": ["b"] } }));
        let b =
            agent(json!({ "name": "b", "conversation": { "role": "sync", "depends_on": ["a"] } }));
        let err = check_agents(&[&a, &b]).unwrap_err();
        assert!(
            matches!(&err, PlanError::Cycle(path) if path.len() == 3),
            "{err}"
        );
        assert!(
            check_agents(&[&a]).is_ok(),
            "a dependency outside the session is ignored"
        );
    }

    #[test]
    fn registration_rules_for_conversation_fields() {
        let register = |extra: Value| {
            let mut body = json!({ "name": "x", "endpoint": "http://h/", "capabilities": ["c"] });
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            serde_json::from_value::<AgentRegistration>(body)
                .unwrap()
                .into_agent(0)
                .map_err(|e| e.field())
        };
        assert_eq!(
            register(json!({ "conversation": { "role": "core", "depends_on": ["y"] } }))
                .unwrap_err(),
            "conversation.depends_on"
        );
        assert_eq!(
            register(json!({ "conversation": { "role": "sync", "depends_on": ["x"] } }))
                .unwrap_err(),
            "conversation.depends_on"
        );
        assert_eq!(
            register(json!({ "keywords": ["a", "A"] })).unwrap_err(),
            "keywords"
        );
        assert_eq!(
            register(json!({ "keywords": [""] })).unwrap_err(),
            "keywords"
        );
        assert_eq!(
            register(json!({ "task_types": ["a b"] })).unwrap_err(),
            "task_types"
        );
        let ok = register(json!({ "keywords": [" Sleep "] })).unwrap();
        assert_eq!(ok.keywords, vec!["sleep"]);
    }

    fn state(checkpoints: &[&str]) -> ConversationState {
        let inputs = checkpoints
            .iter()
            .enumerate()
            .map(|(i, d)| checkpoint(MAIN_TASK, i, CheckpointInput::Description(d.to_string())))
            .collect();
        ConversationState::open("main", inputs)
    }

    fn answer<'a>(agent: &'a str, output: &'a Value) -> AgentAnswer<'a> {
        AgentAnswer {
            agent,
            generates: false,
            output,
        }
    }

    #[test]
    fn checkpoints_move_forward_one_at_a_time_and_the_task_completes() {
        let mut s = state(&["goal", "diet"]);
        assert_eq!(s.checkpoints()[0].status, CheckpointStatus::InProgress);
        assert_eq!(s.checkpoints()[1].status, CheckpointStatus::Pending);
        let done = json!({ "checkpoint_progress": { "main-1": "complete" } });
        let changes = s.apply(&[answer("checklist", &done)]);
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].by.as_deref(), Some("checklist"));
        assert_eq!(changes[1].checkpoint, "main-2");
        assert_eq!(changes[1].to, CheckpointStatus::InProgress);
        // Backwards and unknown marks change nothing.
        let back = json!({ "checkpoint_progress": [{ "id": "main-1", "status": "pending" }, { "id": "zz", "status": "complete" }] });
        assert!(s.apply(&[answer("checklist", &back)]).is_empty());
        let last =
            json!({ "checkpoint_progress": [{ "checkpoint": "main-2", "status": "completed" }] });
        s.apply(&[answer("checklist", &last)]);
        assert_eq!(s.task_stack[0].status, StackTaskStatus::Complete);
        assert!(s.current_task().is_none());
        assert!(s.checkpoints().is_empty());
    }

    #[test]
    fn a_support_task_is_current_until_it_completes_then_the_main_task_resumes() {
        let mut s = state(&["goal"]);
        let push = json!({ "push_task": { "name": "sleep", "checkpoints": ["nights", { "id": "naps", "description": "naps" }] } });
        s.apply(&[answer("coach", &push)]);
        assert_eq!(s.current_task().unwrap().id, "support-1");
        assert_eq!(s.checkpoints()[0].id, "support-1-1");
        assert_eq!(s.checkpoints()[0].status, CheckpointStatus::InProgress);
        assert_eq!(s.checkpoints()[1].id, "naps");
        let done =
            json!({ "checkpoint_progress": { "support-1-1": "complete", "naps": "complete" } });
        s.apply(&[answer("coach", &done)]);
        assert_eq!(s.task_stack[1].status, StackTaskStatus::Complete);
        assert_eq!(s.current_task().unwrap().id, MAIN_TASK);
    }

    #[test]
    fn only_a_generator_sets_checkpoints_and_only_when_there_are_none() {
        let mut s = state(&[]);
        let list = json!({ "checkpoints": ["a", "b"] });
        s.apply(&[answer("other", &list)]);
        assert!(s.checkpoints().is_empty());
        let generator = AgentAnswer {
            agent: "gen",
            generates: true,
            output: &list,
        };
        s.apply(&[generator]);
        assert_eq!(s.checkpoints().len(), 2);
        assert_eq!(s.checkpoints()[0].status, CheckpointStatus::InProgress);
        let again = json!({ "checkpoints": ["c"] });
        s.apply(&[AgentAnswer {
            output: &again,
            ..generator
        }]);
        assert_eq!(s.checkpoints().len(), 2, "set once");
    }

    #[test]
    fn human_intervention_pauses() {
        let mut s = state(&[]);
        let human = json!({ "requires_human": true });
        s.apply(&[answer("human", &human)]);
        assert!(s.flags.requires_human && s.flags.is_paused);
    }
}
