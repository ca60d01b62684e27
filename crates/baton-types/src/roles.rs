//! The parts agents take in conversations. A leaf: the agent's registration and the
//! conversation's plan both read it.

use serde::{Deserialize, Serialize};

/// The most keywords an agent registers for the message analysis.
pub const MAX_KEYWORDS: usize = 32;

/// An agent's part in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The primary agent: it answers every turn no specialist takes, last, with the sync
    /// agents' results.
    Core,
    /// Helpers the primary waits for, run in dependency order.
    Sync,
    /// Helpers nobody waits for: their results show in the next turn.
    Async,
    /// Answers a turn alone when the analysis detects it.
    Specialist,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Core => "core",
            Role::Sync => "sync",
            Role::Async => "async",
            Role::Specialist => "specialist",
        }
    }
}

/// How an agent takes part in conversations, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConversationRole {
    pub role: Role,
    /// Sync agents whose results this one needs first (sync agents only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}
