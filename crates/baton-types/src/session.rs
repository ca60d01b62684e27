//! Conversation sessions: what a client opens, how long it lives idle, and the rules a new one
//! must pass. Everything a session creates is keyed by tenant and session, and goes with it.

use serde::Deserialize;
use serde_json::Value;

use super::conversation::{
    checkpoint, CheckpointInput, ConversationState, MAIN_TASK, MAX_CHECKPOINTS,
};
use super::ids::SessionId;
use super::names::{check_name, NameKind};
use super::recall::{DEFAULT_HISTORY_TURNS, MAX_HISTORY_TURNS};

/// A session ends after this long without a turn.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 2 * 3_600;
pub const MIN_IDLE_TIMEOUT_S: u64 = 60;
pub const MAX_IDLE_TIMEOUT_S: u64 = 7 * 86_400;
pub const MAX_SESSION_AGENTS: usize = 32;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The body of `POST /v1/sessions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SessionInput {
    /// The agents that take part in the session's turns (default: the tenant's).
    #[cfg_attr(feature = "openapi", schema(max_items = 32))]
    pub agents: Option<Vec<String>>,
    /// The client's own data about the session, kept and shown as given.
    pub metadata: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 604800))]
    pub idle_timeout_s: Option<i64>,
    /// The main task's checkpoints, as descriptions or `{id?, description}`.
    pub checkpoints: Option<Vec<CheckpointInput>>,
    /// The main task's name (default `main`).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub task: Option<String>,
    /// How many earlier turns agents receive word for word (default 10); older ones are
    /// summarised by the tenant's `summarize` agent if it has one, otherwise dropped.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 20))]
    pub history_turns: Option<i64>,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: SessionId,
    pub agents: Vec<String>,
    pub metadata: Value,
    pub idle_timeout_s: u64,
    pub created_at_ms: i64,
    pub last_active_at_ms: i64,
    /// Turns started so far; the next one is `turns + 1`.
    pub turns: u32,
    /// The turn running now, if one is.
    pub active_turn: Option<u32>,
    pub state: ConversationState,
    /// How many earlier turns agents receive word for word (see [`crate::recall`]).
    pub history_turns: u32,
    /// Which opening of this id the session is: fresh at each creation and carried by every
    /// item the session writes, so that an end that read an earlier opening's items never
    /// deletes a later one's. None: a session stored before generations were.
    pub generation: Option<String>,
}

impl Session {
    /// When the session ends unless a turn comes first: its idle time-out after its last
    /// activity (its opening, a turn's start, a turn's answer, a resume).
    pub fn expires_at_ms(&self) -> i64 {
        self.last_active_at_ms + self.idle_timeout_s as i64 * 1000
    }

    /// Whether the idle time-out has ended the session. Never while a turn runs: the idle
    /// clock starts again at the turn's answer, however long the turn takes.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.active_turn.is_none() && now_ms >= self.expires_at_ms()
    }
}

/// A fresh generation for a session being opened.
pub fn new_generation() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SessionError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> SessionError {
    SessionError {
        field: field.into(),
        reason: reason.into(),
    }
}

impl SessionInput {
    /// Validates the input and turns it into a session opened at `now_ms`.
    pub fn into_session(self, id: SessionId, now_ms: i64) -> Result<Session, SessionError> {
        let agents = self.agents.unwrap_or_default();
        if agents.len() > MAX_SESSION_AGENTS {
            return Err(invalid(
                "agents",
                format!("a session may name at most {MAX_SESSION_AGENTS} agents"),
            ));
        }
        for (i, agent) in agents.iter().enumerate() {
            check_name(NameKind::Agent, agent).map_err(|e| invalid("agents", e.to_string()))?;
            if agents[..i].contains(agent) {
                return Err(invalid(
                    "agents",
                    format!("`{agent}` is listed more than once"),
                ));
            }
        }
        let metadata = self
            .metadata
            .unwrap_or_else(|| Value::Object(Default::default()));
        if !metadata.is_object() {
            return Err(invalid("metadata", "must be a JSON object"));
        }
        let size = serde_json::to_vec(&metadata).map_or(0, |v| v.len());
        if size > MAX_METADATA_BYTES {
            return Err(invalid(
                "metadata",
                format!("is {size} bytes; the limit is {MAX_METADATA_BYTES}"),
            ));
        }
        let idle_timeout_s = match self.idle_timeout_s {
            None => DEFAULT_IDLE_TIMEOUT_S,
            Some(s) => u64::try_from(s)
                .ok()
                .filter(|s| (MIN_IDLE_TIMEOUT_S..=MAX_IDLE_TIMEOUT_S).contains(s))
                .ok_or_else(|| {
                    invalid(
                        "idle_timeout_s",
                        format!(
                            "must be between {MIN_IDLE_TIMEOUT_S} and {MAX_IDLE_TIMEOUT_S} seconds, got {s}"
                        ),
                    )
                })?,
        };
        let checkpoints = self.checkpoints.unwrap_or_default();
        if checkpoints.len() > MAX_CHECKPOINTS {
            return Err(invalid(
                "checkpoints",
                format!("at most {MAX_CHECKPOINTS} checkpoints"),
            ));
        }
        let checkpoints: Vec<_> = checkpoints
            .into_iter()
            .enumerate()
            .map(|(i, c)| checkpoint(MAIN_TASK, i, c))
            .collect();
        for (i, c) in checkpoints.iter().enumerate() {
            if c.description.trim().is_empty() {
                return Err(invalid("checkpoints", "a checkpoint needs a description"));
            }
            check_name(NameKind::Task, &c.id).map_err(|e| invalid("checkpoints", e.to_string()))?;
            if checkpoints[..i].iter().any(|o| o.id == c.id) {
                return Err(invalid(
                    "checkpoints",
                    format!("checkpoint id `{}` is used more than once", c.id),
                ));
            }
        }
        let history_turns = match self.history_turns {
            None => DEFAULT_HISTORY_TURNS,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_HISTORY_TURNS).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "history_turns",
                        format!("must be between 1 and {MAX_HISTORY_TURNS}, got {n}"),
                    )
                })?,
        };
        let task = self.task.unwrap_or_else(|| MAIN_TASK.into());
        if task.trim().is_empty() || task.chars().count() > 200 {
            return Err(invalid("task", "a task name has 1 to 200 characters"));
        }
        Ok(Session {
            id,
            agents,
            metadata,
            idle_timeout_s,
            created_at_ms: now_ms,
            last_active_at_ms: now_ms,
            turns: 0,
            active_turn: None,
            state: ConversationState::open(&task, checkpoints),
            history_turns,
            generation: Some(new_generation()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: Value) -> SessionInput {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_session_gets_the_default_idle_time_out_and_expires_after_it() {
        let session = input(json!({}))
            .into_session("s".parse().unwrap(), 1_000)
            .unwrap();
        assert_eq!(session.idle_timeout_s, DEFAULT_IDLE_TIMEOUT_S);
        assert_eq!(session.expires_at_ms(), 1_000 + 7_200_000);
        assert!(!session.is_expired(7_200_999));
        assert!(session.is_expired(7_201_000));
        assert_eq!(session.metadata, json!({}));
    }

    #[test]
    fn a_session_running_a_turn_never_expires_and_each_opening_has_its_own_generation() {
        let mut session = input(json!({ "idle_timeout_s": 60 }))
            .into_session("s".parse().unwrap(), 0)
            .unwrap();
        session.active_turn = Some(1);
        assert!(!session.is_expired(60_000));
        assert!(!session.is_expired(i64::MAX / 2));
        session.active_turn = None;
        assert!(session.is_expired(60_000));
        let again = input(json!({}))
            .into_session("s".parse().unwrap(), 0)
            .unwrap();
        assert!(session.generation.is_some());
        assert_ne!(session.generation, again.generation);
    }

    #[test]
    fn bad_input_names_its_field() {
        for (body, field) in [
            (json!({ "idle_timeout_s": 5 }), "idle_timeout_s"),
            (json!({ "idle_timeout_s": -1 }), "idle_timeout_s"),
            (json!({ "metadata": [1, 2] }), "metadata"),
            (json!({ "agents": ["a b"] }), "agents"),
            (json!({ "agents": ["a", "a"] }), "agents"),
        ] {
            let err = input(body.clone())
                .into_session("s".parse().unwrap(), 0)
                .unwrap_err();
            assert_eq!(err.field, field, "{body}");
        }
        let big = json!({ "metadata": { "x": "y".repeat(MAX_METADATA_BYTES) } });
        assert_eq!(
            input(big)
                .into_session("s".parse().unwrap(), 0)
                .unwrap_err()
                .field,
            "metadata"
        );
        assert!(serde_json::from_value::<SessionInput>(json!({ "colour": 1 })).is_err());
    }
}
