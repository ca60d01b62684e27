//! Identifier rules. Ids become parts of DynamoDB keys joined with `#`, so they are kept to a
//! small, printable alphabet and a bounded length.

use std::fmt;

/// What a name is used for, so that errors can say which field is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Tenant,
    Agent,
    Task,
    Capability,
    Workflow,
}

impl NameKind {
    fn max_len(self) -> usize {
        match self {
            NameKind::Workflow => 36,
            _ => 64,
        }
    }

    fn allows(self, c: char) -> bool {
        match self {
            NameKind::Capability => c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'),
            _ => c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'),
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Tenant => "tenant id",
            NameKind::Agent => "agent name",
            NameKind::Task => "task id",
            NameKind::Capability => "capability",
            NameKind::Workflow => "workflow id",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{value}` is invalid: {reason}")]
pub struct InvalidName {
    pub kind: NameKind,
    pub value: String,
    pub reason: &'static str,
}

/// Checks `value` against the rules for `kind`.
pub fn check_name(kind: NameKind, value: &str) -> Result<(), InvalidName> {
    let fail = |reason| {
        Err(InvalidName {
            kind,
            value: value.chars().take(80).collect(),
            reason,
        })
    };
    if value.is_empty() {
        return fail("it is empty");
    }
    if value.len() > kind.max_len() {
        return fail("it is too long");
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return fail("it must start with a letter or digit");
    }
    if !value.chars().all(|c| kind.allows(c)) {
        return fail(match kind {
            NameKind::Capability => "only letters, digits and _ - . : are allowed",
            _ => "only letters, digits and _ - . are allowed",
        });
    }
    Ok(())
}

/// Names no agent can take: they are routes of their own under `/v1/agents/`.
pub const RESERVED_NAMES: [&str; 2] = ["categories", "health"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        assert!(check_name(NameKind::Agent, "summarizer-v2.1").is_ok());
        assert!(check_name(NameKind::Capability, "text:summarize").is_ok());
    }

    #[test]
    fn key_separators_and_blanks_are_rejected() {
        assert!(check_name(NameKind::Task, "a#b").is_err());
        assert!(check_name(NameKind::Task, "").is_err());
        assert!(check_name(NameKind::Task, "-a").is_err());
        assert!(check_name(NameKind::Agent, "a b").is_err());
        assert!(check_name(NameKind::Agent, &"x".repeat(65)).is_err());
    }
}
