//! What the chaos test and the chaos benchmark share: agents that misbehave at set rates, a
//! workflow whose every output can be checked, and the audit of what must always hold.
//!
//! Each task's output is `sum = input.n + Σ dependencies' sums`, so a task that saw wrong or
//! missing dependency data ends with a wrong sum, whatever the faults did on the way. With
//! payloads, a task's input carries ballast and its output `pad` bytes of padding, of sizes
//! from a few bytes to past the payload bucket's threshold: a dependent that received a
//! padding cut or lost counts it in `pads_seen`, which the audit checks.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::agents::{AgentReply, Behaviour, ReceivedCall};

/// How test agents misbehave.
#[derive(Debug, Clone, Copy)]
pub struct Misbehaviour {
    /// Share of calls answered with a 5xx.
    pub server_error_rate: f64,
    /// Share of calls answered only after `hang`, past the agent's time-out.
    pub timeout_rate: f64,
    pub hang: Duration,
}

/// The figures: 20 % of calls fail with a 5xx, 5 % time out.
pub const AGENT_FAULTS: Misbehaviour = Misbehaviour {
    server_error_rate: 0.20,
    timeout_rate: 0.05,
    hang: Duration::from_millis(1_500),
};

/// An agent that answers `{task, sum}` and misbehaves at `faults`' rates, drawn from `seed`.
pub fn summing_agent(faults: Misbehaviour, seed: u64) -> Behaviour {
    let calls = AtomicU64::new(0);
    Arc::new(move |call: &Value| {
        let draw = unit(
            seed ^ calls
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9),
        );
        let sum = call
            .pointer("/input/n")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + call["dependencies"].as_object().map_or(0, |deps| {
                deps.values().filter_map(|d| d["sum"].as_i64()).sum()
            });
        let mut output = json!({ "task": call["task_id"], "sum": sum });
        if let Some(pad) = call.pointer("/input/pad").and_then(Value::as_u64) {
            output["pad"] = json!("p".repeat(pad as usize));
            output["pads_seen"] = json!(call["dependencies"].as_object().map_or(0, |deps| {
                deps.values()
                    .filter_map(|d| d["pad"].as_str())
                    .map(str::len)
                    .sum::<usize>()
            }));
        }
        let ok = AgentReply::ok(output);
        if draw < faults.server_error_rate {
            AgentReply::error(503, "overloaded (fault injection)")
        } else if draw < faults.server_error_rate + faults.timeout_rate {
            ok.after(faults.hang)
        } else {
            ok
        }
    })
}

/// A uniform draw in [0, 1) from a 64-bit seed (splitmix64).
fn unit(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The tasks of a chaos workflow: (id, n, dependencies). A fan-out, a join, and a tail.
pub const TASKS: [(&str, i64, &[&str]); 5] = [
    ("a", 1, &[]),
    ("b", 2, &["a"]),
    ("c", 3, &["a"]),
    ("d", 4, &["b", "c"]),
    ("e", 5, &["d"]),
];

/// The sum each task must end with.
pub fn expected_sums() -> BTreeMap<&'static str, i64> {
    let mut sums = BTreeMap::new();
    for (id, n, deps) in TASKS {
        let sum = n + deps.iter().map(|d| sums[d]).sum::<i64>();
        sums.insert(id, sum);
    }
    sums
}

/// Output paddings for [`workflow_with_payloads`]: inline, just under the item's inline limit
/// (8 KiB), just over it in the payload bucket, and larger.
pub const PAD_BYTES: [usize; 6] = [0, 2 * 1024, 7 * 1024, 10 * 1024, 200 * 1024, 1024 * 1024];
/// The most input ballast a task carries (a workflow's body stays well under its limit).
const MAX_BALLAST_BYTES: usize = 40 * 1024;

/// One chaos workflow, retried patiently: every workflow whose agents can eventually
/// succeed must succeed.
pub fn workflow(name: &str, capability: &str) -> Value {
    chaos_workflow(name, capability, None)
}

/// The same with payloads of every size: task `i` of workflow `seed` asks for an output
/// padding of `PAD_BYTES[(seed + i) % 6]` and carries as much input ballast (at most 40 KiB).
pub fn workflow_with_payloads(name: &str, capability: &str, seed: usize) -> Value {
    chaos_workflow(name, capability, Some(seed))
}

fn chaos_workflow(name: &str, capability: &str, payload_seed: Option<usize>) -> Value {
    let tasks: Vec<Value> = TASKS
        .iter()
        .enumerate()
        .map(|(i, (id, n, deps))| {
            let mut input = json!({ "n": n });
            if let Some(seed) = payload_seed {
                let pad = PAD_BYTES[(seed + i) % PAD_BYTES.len()];
                input["pad"] = json!(pad);
                input["ballast"] = json!("b".repeat(pad.min(MAX_BALLAST_BYTES)));
            }
            json!({ "id": id, "capability": capability, "input": input, "depends_on": deps })
        })
        .collect();
    json!({
        "name": name,
        "defaults": { "retry": { "max_attempts": 10, "backoff": "exponential", "base_ms": 100, "max_ms": 1000 } },
        "tasks": tasks,
    })
}

/// What the audit found. Everything but the counts of outcomes must be 0.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub workflows: usize,
    /// Accepted, but not found.
    pub lost: usize,
    /// Not final by the end.
    pub stuck: usize,
    /// Agent calls beyond one per claim of an attempt (a claim repeats a call only after the
    /// handler holding it died, with the same key).
    pub duplicated_calls: usize,
    /// Attempts recorded twice or out of order: a task released or retried twice.
    pub double_runs: usize,
    /// Calls whose dependency data differs from the parents' outputs, or wrong final sums.
    pub bad_data: usize,
    /// Finished workflows read with an unfinished task.
    pub inconsistent: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub agent_calls: usize,
    pub attempts: usize,
    pub lease_expirations: usize,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

const EXAMPLES: usize = 10;

impl Audit {
    fn example(&mut self, what: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(what);
        }
    }

    pub fn holds(&self) -> bool {
        self.lost == 0
            && self.stuck == 0
            && self.duplicated_calls == 0
            && self.double_runs == 0
            && self.bad_data == 0
            && self.inconsistent == 0
    }
}

/// Audits the workflows' last views (None: not found) against every call the agents got.
pub fn audit(views: &[Option<Value>], calls: &[ReceivedCall]) -> Audit {
    let mut audit = Audit {
        workflows: views.len(),
        agent_calls: calls.len(),
        ..Audit::default()
    };
    let expected = expected_sums();
    // Per attempt key: the claims its record counts. Per (workflow, task): its final output.
    let mut claims: HashMap<String, u32> = HashMap::new();
    let mut outputs: HashMap<(String, String), Value> = HashMap::new();
    for view in views {
        let Some(view) = view else {
            audit.lost += 1;
            continue;
        };
        let id = view["workflow_id"].as_str().unwrap_or_default().to_string();
        match view["status"].as_str() {
            Some("succeeded") => audit.succeeded += 1,
            Some("failed") => audit.failed += 1,
            _ => audit.stuck += 1,
        }
        let tasks = view["tasks"].as_array().cloned().unwrap_or_default();
        if view["status"] != "running"
            && tasks.iter().any(|t| {
                !matches!(
                    t["status"].as_str(),
                    Some("succeeded" | "failed" | "skipped" | "cancelled")
                )
            })
        {
            audit.inconsistent += 1;
        }
        for task in &tasks {
            let task_id = task["id"].as_str().unwrap_or_default().to_string();
            let entries = task["attempts"].as_array().cloned().unwrap_or_default();
            audit.attempts += entries.len();
            audit.lease_expirations += task["lease_expirations"].as_u64().unwrap_or(0) as usize;
            let numbers: Vec<u64> = entries
                .iter()
                .filter_map(|a| a["attempt"].as_u64())
                .collect();
            if numbers.iter().enumerate().any(|(i, n)| *n != i as u64 + 1) {
                audit.double_runs += 1;
                audit.example(format!("{id}/{task_id}: attempts {numbers:?}"));
            }
            for entry in &entries {
                let key = format!("default:{id}:{task_id}:{}", entry["attempt"]);
                claims.insert(key, entry["claims"].as_u64().unwrap_or(0) as u32);
            }
            if task["status"] == "succeeded" {
                let sum = task["output"]["sum"].as_i64();
                if sum != expected.get(task_id.as_str()).copied() {
                    audit.bad_data += 1;
                    audit.example(format!("{id}/{task_id}: sum {sum:?}"));
                }
                if let Some(seen) = task["output"]["pads_seen"].as_u64() {
                    let expected = pads_expected(&tasks, &task_id);
                    if Some(seen) != expected {
                        audit.bad_data += 1;
                        audit.example(format!(
                            "{id}/{task_id}: saw {seen} of {expected:?} padding"
                        ));
                    }
                }
                outputs.insert((id.clone(), task_id), task["output"].clone());
            }
        }
    }
    let mut calls_per_key: HashMap<&str, u32> = HashMap::new();
    for call in calls {
        let key = call.idempotency_key.as_deref().unwrap_or_default();
        *calls_per_key.entry(key).or_default() += 1;
        // Dependencies are only released once their output is final.
        let workflow = call.body["workflow_id"].as_str().unwrap_or_default();
        if let Some(deps) = call.body["dependencies"].as_object() {
            for (parent, output) in deps {
                let recorded = outputs.get(&(workflow.to_string(), parent.clone()));
                if recorded.is_some_and(|r| r != output) {
                    audit.bad_data += 1;
                    audit.example(format!("{workflow}: a call saw {parent} as {output}"));
                }
            }
        }
    }
    for (key, count) in calls_per_key {
        // A call with no recorded attempt at all (not even a superseded claim) is a duplicate.
        let claimed = claims.get(key).copied().unwrap_or(0);
        if count > claimed {
            audit.duplicated_calls += (count - claimed) as usize;
            audit.example(format!(
                "{key}: {count} call(s), {claimed} claim(s) recorded"
            ));
        }
    }
    audit
}

/// The padding a task's dependencies answered, by their outputs in the view (None: one
/// is missing).
fn pads_expected(tasks: &[Value], task_id: &str) -> Option<u64> {
    let (_, _, deps) = TASKS.iter().find(|(id, _, _)| *id == task_id)?;
    deps.iter()
        .map(|dep| {
            let parent = tasks.iter().find(|t| t["id"] == *dep)?;
            Some(parent["output"]["pad"].as_str()?.len() as u64)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_follow_the_dependencies() {
        let sums = expected_sums();
        assert_eq!(sums["a"], 1);
        assert_eq!(sums["d"], 4 + 3 + 4);
        assert_eq!(sums["e"], 16);
    }

    #[test]
    fn misbehaviour_follows_its_rates() {
        let agent = summing_agent(AGENT_FAULTS, 7);
        let replies: Vec<AgentReply> = (0..2000)
            .map(|_| agent(&json!({ "task_id": "a", "input": { "n": 1 } })))
            .collect();
        let errors = replies.iter().filter(|r| r.status == 503).count();
        let slow = replies.iter().filter(|r| !r.delay.is_zero()).count();
        assert!((300..500).contains(&errors), "{errors}");
        assert!((50..150).contains(&slow), "{slow}");
        assert!(replies
            .iter()
            .all(|r| r.status != 200 || r.body["sum"] == 1));
    }
}
