//! Where each record lives: the key layout of the state and memory tables.
//!
//! State table (`pk`, `sk`), every partition scoped by tenant:
//! - `{tenant}#WF#{workflow}` / `WORKFLOW`: the workflow record and its counters;
//! - `{tenant}#WF#{workflow}` / `TASK#{task}`: one item per task, so a workflow is one query;
//! - `{tenant}#WF#{workflow}#ARCHIVE` / `TASK#{task}#DRIVE#{drive}`: a task's attempts of a
//!   drive a redrive ended, moved off its item; a partition apart, so reading the workflow
//!   never reads them (only its history does);
//! - `{tenant}#AGENTS` / `AGENT#{name}`: the registry.
//!
//! - `{tenant}#SESSION#{session}` / `SESSION`: a conversation session and its conversation
//!   state; `TURN#{n}` its turns, `INSTANCE#{agent}` its agents' instances, `ASYNC#{n}#{agent}`
//!   async results not shown yet. Everything the session creates lives in its partition,
//!   except its turns' workflows, which its turns name; ending it deletes both;
//! - `{tenant}#CONFIG` / `CAPABILITY#{name}`, `PRIORITIES` and `QUOTAS`: the tenant's
//!   settings, one query for all of them; `PACE`: its admission and pacing cells.
//!
//! Index `leases` (`lease_shard`, `lease_until`) is sparse: only queued and running tasks carry
//! the attributes, so cleanup finds expired leases with one query per shard.
//!
//! Index `running` (`run_pk`, `list_sk`) is sparse: a submitted workflow carries
//! `{tenant}#RUNNING` until it finishes.
//!
//! Index `sweeps` (`sweep_shard`, `sweep_at`) is sparse too. A running workflow record carries
//! `WF#{shard}` and the time of its next check, so cleanup finds every unfinished workflow
//! without trusting any message; an agent with a health check carries `HEALTH` and the time
//! its next probe is due; a session carries `SESSION` and the time its idle time-out ends it.
//!
//! Memory table (`pk`, `sk`):
//! - `{tenant}#AGENT#{agent}` / `STATS#{task type}`: learned statistics;
//! - `{tenant}#AGENT#{agent}` / `CIRCUIT`: the agent's circuit breaker;
//! - `{tenant}#AGENT#{agent}` / `OUTCOME#{workflow}#{task}#{attempt}`: outcome history;
//! - `{tenant}#AGENT#{agent}` / `LOAD`: the calls in flight to the agent, each with its lease
//!   (only agents with limits, or calls counted for `least_loaded`);
//! - `{tenant}#ROTATION` / `{capability}`: the round-robin counter.

use baton_types::routing::stable_shard;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const LEASES_INDEX: &str = "leases";
pub const LEASE_SHARD: &str = "lease_shard";
pub const LEASE_UNTIL: &str = "lease_until";
pub const EXPIRES_AT: &str = "expires_at";
/// Shards of the lease index: enough to spread writes, few enough for cleanup to query all.
pub const LEASE_SHARDS: u32 = 4;
pub const SWEEPS_INDEX: &str = "sweeps";
pub const SWEEP_SHARD: &str = "sweep_shard";
pub const SWEEP_AT: &str = "sweep_at";
/// The sweeps-index partition of agents with a health check.
pub const HEALTH_SWEEP: &str = "HEALTH";
pub const CIRCUIT_SK: &str = "CIRCUIT";
/// The sweeps-index partition of open sessions.
pub const SESSION_SWEEP: &str = "SESSION";
/// The sweeps-index partition of the tenants' daily analyses (one item each, in the tenant's
/// config partition).
pub const ANALYSIS_SWEEP: &str = "ANALYSIS";
pub const ANALYSIS_SK: &str = "ANALYSIS";
pub const SESSION_SK: &str = "SESSION";
pub const LOAD_SK: &str = "LOAD";

pub const WORKFLOW_SK: &str = "WORKFLOW";
/// The list index: a tenant's workflows by creation, newest first.
pub const LIST_INDEX: &str = "workflows";
pub const LIST_PK: &str = "list_pk";
pub const LIST_SK: &str = "list_sk";
/// The running index: a tenant's unfinished workflows (keys only), counted for its quota and
/// its stats without reading any other tenant's keys.
pub const RUNNING_INDEX: &str = "running";
pub const RUN_PK: &str = "run_pk";

pub fn running_pk(tenant: &str) -> String {
    format!("{tenant}#RUNNING")
}
/// A workflow's control (`paused`, `cancelling`), whether a cancel is forced, the controls
/// applied, and its drive (redrives so far); a task's hold and the drive it was reset for.
pub const CONTROL: &str = "control";
pub const CANCEL_FORCE: &str = "cancel_force";
pub const CONTROLS: &str = "controls";
pub const DRIVE: &str = "drive";
pub const HOLD: &str = "held_for";

pub fn workflow_list_pk(tenant: &str) -> String {
    format!("{tenant}#WORKFLOWS")
}

/// The workflow id of a list index sort key (None: not one).
pub fn parse_workflow_list_sk(sk: &str) -> Option<&str> {
    let (created, id) = sk.split_once('#')?;
    (created.len() == 15 && created.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty())
        .then_some(id)
}

/// Sorts by creation time, then id; milliseconds padded so that text order is time order.
pub fn workflow_list_sk(created_at_ms: i64, workflow_id: &str) -> String {
    format!("{created_at_ms:015}#{workflow_id}")
}
const TASK_PREFIX: &str = "TASK#";

pub fn workflow_pk(tenant: &str, workflow_id: &str) -> String {
    format!("{tenant}#WF#{workflow_id}")
}

pub fn task_sk(task_id: &str) -> String {
    format!("{TASK_PREFIX}{task_id}")
}

/// Where a workflow's redrives keep the attempts of the drives they ended.
pub fn workflow_archive_pk(tenant: &str, workflow_id: &str) -> String {
    format!("{tenant}#WF#{workflow_id}#ARCHIVE")
}

/// The task whose attempts an archive item holds.
pub const ARCHIVED_TASK: &str = "task_id";

/// A task's attempts of one drive; the drive zero-padded so that a task's drives sort in order.
pub fn archived_drive_sk(task_id: &str, drive: u32) -> String {
    format!("{TASK_PREFIX}{task_id}#DRIVE#{drive:05}")
}

pub fn agents_pk(tenant: &str) -> String {
    format!("{tenant}#AGENTS")
}

pub fn agent_sk(name: &str) -> String {
    format!("AGENT#{name}")
}

pub fn session_pk(tenant: &str, session_id: &str) -> String {
    format!("{tenant}#SESSION#{session_id}")
}

/// Splits a session's partition key back into (tenant, session).
pub fn parse_session_pk(pk: &str) -> Option<(&str, &str)> {
    pk.split_once("#SESSION#")
}

/// A session's turn, numbered from 1; zero-padded so that turns sort in order.
pub fn turn_sk(turn: u32) -> String {
    format!("{TURN_PREFIX}{turn:06}")
}

/// An agent's instance in a session.
pub fn instance_sk(agent: &str) -> String {
    format!("{INSTANCE_PREFIX}{agent}")
}

/// An async agent's result waiting for the session's next turn.
pub fn async_result_sk(turn: u32, agent: &str) -> String {
    format!("{ASYNC_PREFIX}{turn:06}#{agent}")
}

pub const TURN_PREFIX: &str = "TURN#";
pub const INSTANCE_PREFIX: &str = "INSTANCE#";
pub const ASYNC_PREFIX: &str = "ASYNC#";

pub fn config_pk(tenant: &str) -> String {
    format!("{tenant}#CONFIG")
}

/// The tenant of a config partition's key.
pub fn parse_config_pk(pk: &str) -> Option<&str> {
    pk.strip_suffix("#CONFIG")
}

pub const CAPABILITY_PREFIX: &str = "CAPABILITY#";
pub const PRIORITIES_SK: &str = "PRIORITIES";
/// The quotas the operator set for the tenant.
pub const QUOTAS_SK: &str = "QUOTAS";
/// The tenant's pacing cells (see [`baton_types::quota`]).
pub const PACE_SK: &str = "PACE";
/// The tenant's count of agents, which registry changes keep within its quota.
pub const AGENT_COUNT_SK: &str = "AGENT_COUNT";

/// A tenant's count of something kept outside the tables (its secrets).
pub fn counter_sk(counter: &str) -> String {
    format!("COUNT#{counter}")
}

pub fn capability_sk(capability: &str) -> String {
    format!("{CAPABILITY_PREFIX}{capability}")
}

pub fn rotation_pk(tenant: &str) -> String {
    format!("{tenant}#ROTATION")
}

pub fn memory_agent_pk(tenant: &str, agent: &str) -> String {
    format!("{tenant}#AGENT#{agent}")
}

pub fn stats_sk(task_type: &str) -> String {
    format!("STATS#{task_type}")
}

/// A remembered call's sort key: by the time it finished, so an agent's results read newest
/// first and by window; the rest makes it the attempt's own (a redelivery writes the same key).
pub fn result_sk(finished_at_ms: i64, workflow_id: &str, task_id: &str, attempt: u32) -> String {
    format!(
        "{RESULT_PREFIX}{}#{workflow_id}#{task_id}#{attempt}",
        result_time(finished_at_ms)
    )
}

pub const RESULT_PREFIX: &str = "RESULT#";

/// A time as result keys write it: fixed width, so that keys sort by time.
pub fn result_time(at_ms: i64) -> String {
    format!("{:013}", at_ms.clamp(0, 9_999_999_999_999))
}

pub fn lease_shard(workflow_id: &str) -> String {
    stable_shard(workflow_id, LEASE_SHARDS).to_string()
}

/// The sweeps-index partition of a running workflow.
pub fn workflow_sweep_shard(workflow_id: &str) -> String {
    workflow_sweep_partition(stable_shard(workflow_id, LEASE_SHARDS))
}

pub fn workflow_sweep_partition(shard: u32) -> String {
    format!("WF#{shard}")
}

/// Splits a workflow's partition key back into (tenant, workflow).
pub fn parse_workflow_pk(pk: &str) -> Option<(&str, &str)> {
    pk.split_once("#WF#")
}

/// Splits an agent's keys back into (tenant, name).
pub fn parse_agent_keys<'a>(pk: &'a str, sk: &'a str) -> Option<(&'a str, &'a str)> {
    Some((pk.strip_suffix("#AGENTS")?, sk.strip_prefix("AGENT#")?))
}

/// Splits a task's keys back into (tenant, workflow, task).
pub fn parse_task_keys<'a>(pk: &'a str, sk: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
    let (tenant, workflow_id) = pk.split_once("#WF#")?;
    let task_id = sk.strip_prefix(TASK_PREFIX)?;
    Some((tenant, workflow_id, task_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_keys_round_trip() {
        let pk = workflow_pk("acme", "0190-abc");
        let sk = task_sk("summarize");
        assert_eq!(
            parse_task_keys(&pk, &sk),
            Some(("acme", "0190-abc", "summarize"))
        );
        assert_eq!(parse_task_keys(&pk, WORKFLOW_SK), None);
        assert_eq!(parse_workflow_pk(&pk), Some(("acme", "0190-abc")));
        let archive = workflow_archive_pk("acme", "0190-abc");
        assert!(archive.starts_with(&pk) && archive != pk);
        assert!(archived_drive_sk("a", 9) < archived_drive_sk("a", 10));
        assert_eq!(
            parse_agent_keys(&agents_pk("acme"), &agent_sk("summarizer")),
            Some(("acme", "summarizer"))
        );
    }

    #[test]
    fn lease_shards_are_stable_and_bounded() {
        let s = lease_shard("wf-1");
        assert_eq!(s, lease_shard("wf-1"));
        assert!(s.parse::<u32>().unwrap() < LEASE_SHARDS);
    }
}
