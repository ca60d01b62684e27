//! Ids as types. Each is checked once, where it enters (a path, a body, a token, a message), by
//! its `parse` or by deserialising it; a value of the type is a checked id from then on, so no
//! layer below checks it again. Each reads as `&str` (`Deref`), and serialises as its text, so
//! stored items and messages keep their shape.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::names::{check_name, InvalidName, NameKind};

macro_rules! checked_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// `value` as this id, if it keeps the rules of its kind.
            pub fn parse(value: &str) -> Result<Self, InvalidName> {
                check_name($kind, value)?;
                Ok($name(value.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl From<&$name> for String {
            fn from(id: &$name) -> String {
                id.0.clone()
            }
        }

        impl FromStr for $name {
            type Err = InvalidName;
            fn from_str(value: &str) -> Result<Self, InvalidName> {
                $name::parse(value)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == &other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        // Checked on the way in: a message or item that carries a malformed id is refused
        // whole, as malformed input, rather than carried on.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                check_name($kind, &text).map_err(serde::de::Error::custom)?;
                Ok($name(text))
            }
        }
    };
}

checked_id!(
    /// Whose the data is: every key, message and call carries one.
    TenantId,
    NameKind::Tenant
);
checked_id!(
    /// A workflow's id (a UUID v7 when Baton made it).
    WorkflowId,
    NameKind::Workflow
);
checked_id!(
    /// A task's id within its workflow, as the submission named it.
    TaskId,
    NameKind::Task
);
checked_id!(
    /// An agent's name within its tenant's registry.
    AgentName,
    NameKind::Agent
);
checked_id!(
    /// A conversation session's id (the same rules as a workflow's).
    SessionId,
    NameKind::Workflow
);

impl TaskId {
    /// The name a workflow's own stream is kept under, beside its tasks' streams: no task has
    /// it, since a task's id starts with a letter or a digit.
    pub fn workflow_stream() -> Self {
        TaskId("_workflow".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_checked_once_on_the_way_in() {
        let tenant = TenantId::parse("acme").unwrap();
        assert_eq!(tenant, "acme");
        assert_eq!(tenant.len(), 4, "reads as a str");
        assert!(TenantId::parse("a#b").is_err(), "no key separator");
        assert!(
            WorkflowId::parse(&"w".repeat(37)).is_err(),
            "workflow ids are short"
        );
        assert!(AgentName::parse("").is_err());
        assert_eq!("t-1".parse::<TaskId>().unwrap().as_str(), "t-1");
    }

    #[test]
    fn ids_serialise_as_their_text_and_refuse_malformed_text() {
        let id = SessionId::parse("s-1").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"s-1\"");
        let back: SessionId = serde_json::from_str("\"s-1\"").unwrap();
        assert_eq!(back, id);
        let refused = serde_json::from_str::<TenantId>("\"a b\"").unwrap_err();
        assert!(refused.to_string().contains("tenant id"), "{refused}");
    }
}
