//! Remembered calls: the result item learn writes for each attempt (see
//! [`baton_types::results`]), and the query that reads one agent's back, newest first.

use super::*;
use baton_types::ids::{AgentName, TenantId};
use baton_types::messages::OutcomeMessage;
use baton_types::outcome::TokenUsage;
use baton_types::results::{CallDetails, PastResult, ResultQuery};

/// Pages of one agent's results a question reads at most (each up to 1 MB, mostly far less):
/// a filter that matches little cannot turn one question into a scan of the whole history.
const MAX_PAGES: usize = 4;

/// The result item of one outcome, keyed under the agent in the memory table.
pub(super) fn result_item(
    pk: &str,
    outcome: &OutcomeMessage,
    expires_at_s: i64,
) -> Result<Item, StoreError> {
    let task = &outcome.task;
    let mut item = HashMap::from([
        (PK.into(), s(pk)),
        (
            SK.into(),
            s(keys::result_sk(
                outcome.finished_at_ms,
                &task.workflow_id,
                &task.task_id,
                task.attempt,
            )),
        ),
        ("workflow_id".into(), s(task.workflow_id.as_str())),
        ("task_id".into(), s(task.task_id.as_str())),
        ("attempt".into(), n(task.attempt)),
        ("task_type".into(), s(outcome.task_type.as_str())),
        ("success".into(), AttributeValue::Bool(outcome.success)),
        ("latency_ms".into(), n(outcome.latency_ms)),
        ("finished_at".into(), n(outcome.finished_at_ms)),
        (EXPIRES_AT.into(), n(expires_at_s)),
    ]);
    if let Some(failure) = outcome.failure {
        item.insert("failure".into(), json(&failure)?);
    }
    if let Some(usage) = outcome.usage {
        item.insert("input_tokens".into(), n(usage.input_tokens));
        item.insert("output_tokens".into(), n(usage.output_tokens));
    }
    let details = &outcome.details;
    if !details.capability.is_empty() {
        item.insert("capability".into(), s(details.capability.as_str()));
    }
    if let Some(wait) = details.queue_wait_ms {
        item.insert("queue_wait_ms".into(), n(wait));
    }
    if details.busy_waits > 0 {
        item.insert("busy_waits".into(), n(details.busy_waits));
    }
    if let Some(strategy) = details.strategy {
        item.insert("strategy".into(), json(&strategy)?);
    }
    if let Some(slack) = details.deadline_slack_ms {
        item.insert("deadline_slack_ms".into(), n(slack));
    }
    let texts = [
        ("failure_message", &details.failure_message),
        ("input_preview", &details.input_preview),
        ("output_preview", &details.output_preview),
    ];
    for (name, text) in texts {
        if let Some(text) = text {
            item.insert(name.into(), s(text.as_str()));
        }
    }
    Ok(item)
}

fn past_result(agent: &AgentName, item: &Item) -> Result<PastResult, StoreError> {
    let a = Attrs(item);
    let usage = match (a.opt_n("input_tokens")?, a.opt_n("output_tokens")?) {
        (None, None) => None,
        (input, output) => Some(TokenUsage {
            input_tokens: input.unwrap_or(0),
            output_tokens: output.unwrap_or(0),
        }),
    };
    let text = |name: &str| a.opt_s(name).map(str::to_string);
    Ok(PastResult {
        workflow_id: stored_id(a.s("workflow_id")?)?,
        task_id: stored_id(a.s("task_id")?)?,
        attempt: a.n("attempt")?,
        agent: agent.clone(),
        task_type: a.s("task_type")?.to_string(),
        success: a.bool("success").unwrap_or(false),
        failure: a.json("failure")?,
        latency_ms: a.n("latency_ms")?,
        usage,
        finished_at_ms: a.n("finished_at")?,
        details: CallDetails {
            capability: a.opt_s("capability").unwrap_or_default().to_string(),
            queue_wait_ms: a.opt_n("queue_wait_ms")?,
            busy_waits: a.opt_n("busy_waits")?.unwrap_or(0),
            strategy: a.json("strategy")?,
            deadline_slack_ms: a.opt_n("deadline_slack_ms")?,
            failure_message: text("failure_message"),
            input_preview: text("input_preview"),
            output_preview: text("output_preview"),
        },
    })
}

impl DynamoStore {
    /// One agent's results in the query's window, newest first; a damaged item is skipped
    /// (and logged), never the whole answer.
    pub(super) async fn query_results(
        &self,
        tenant: &TenantId,
        agent: &AgentName,
        query: &ResultQuery,
    ) -> Result<Vec<PastResult>, StoreError> {
        let mut found = Vec::new();
        let mut start_key = None;
        for _ in 0..MAX_PAGES {
            let mut request = self
                .client
                .query()
                .table_name(&self.memory_table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(keys::memory_agent_pk(tenant, agent)))
                .expression_attribute_values(
                    ":from",
                    s(format!(
                        "{}{}",
                        keys::RESULT_PREFIX,
                        keys::result_time(query.since_ms)
                    )),
                )
                .expression_attribute_values(
                    ":to",
                    // `~` sorts after every character a key's tail holds.
                    s(format!(
                        "{}{}~",
                        keys::RESULT_PREFIX,
                        keys::result_time(query.until_ms)
                    )),
                )
                .scan_index_forward(false)
                .set_exclusive_start_key(start_key);
            let mut filters = Vec::new();
            if let Some(task_type) = &query.task_type {
                filters.push("task_type = :type");
                request = request.expression_attribute_values(":type", s(task_type.as_str()));
            }
            if let Some(success) = query.success {
                filters.push("success = :success");
                request =
                    request.expression_attribute_values(":success", AttributeValue::Bool(success));
            }
            if !filters.is_empty() {
                request = request.filter_expression(filters.join(" AND "));
            }
            let out = request.send().await.map_err(dynamo_error)?;
            for item in out.items.unwrap_or_default() {
                match past_result(agent, &item) {
                    Ok(result) => found.push(result),
                    Err(e) => tracing::warn!(error = %e, "a damaged result item; skipped"),
                }
                if found.len() >= query.limit {
                    return Ok(found);
                }
            }
            start_key = out.last_evaluated_key;
            if start_key.is_none() {
                break;
            }
        }
        Ok(found)
    }
}
