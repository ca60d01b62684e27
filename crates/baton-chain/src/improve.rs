//! One self-improvement analysis of a tenant, and the impact measures of what a person
//! applied: used by the API (`POST /v1/improvements/analyze`, the report) and by the
//! scheduled function (daily per tenant).
//!
//! Reads the registry, the tenant's settings, the agents' circuits and their results in the
//! window (bounded per agent); the rules are pure ([`baton_types::improvements`]); writes only
//! suggestions and patterns, conditioned so concurrent analyses write each once. **Nothing
//! here changes an agent or a setting.**
//!
//! When the tenant has an analyst (an agent with `improvements.analyze`), each analysis also
//! submits it a one-task workflow with the evidence digested ([`baton_types::advice`]); when
//! that task ends, the chain keeps the suggestions it answered, marked as the analyst's
//! ([`on_task_ended`]).

use std::collections::BTreeMap;

use baton_types::advice;
use baton_types::agent::AgentTarget;
use baton_types::ids::{AgentName, TaskId, TenantId, WorkflowId};
use baton_types::improvements::{self, AgentFacts, CallFact, Evidence, Suggestion};
use baton_types::messages::{RouteMessage, TaskRef};
use baton_types::patterns;
use baton_types::records::TaskRecord;
use baton_types::results::{PastResult, ResultQuery};
use baton_types::suggestions::{
    call_fact, suggestion_id, within, StoredSuggestion, SuggestionStatus,
};
use baton_types::task::{TaskProfile, TaskStatus};
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::config::Settings;
use crate::queue::TaskQueue;
use crate::store::{
    AgentRegistry, ConfigStore, ImprovementStore, LearningStore, NewTask, NewWorkflow,
    PatternStore, StoreError, WorkflowStore,
};

/// Who the rules' suggestions are from.
const RULES: &str = "rules";
/// Results read per agent for one analysis: the window's newest.
const CALLS_PER_AGENT: usize = 2_000;
/// Agents read at once.
const READ_CONCURRENCY: usize = 8;
/// Task types whose patterns one analysis refreshes.
const MAX_PATTERN_TYPES: usize = 50;
/// The window the scheduled analysis reads: a day.
pub const DAILY_WINDOW_MS: i64 = 24 * 3_600_000;

/// What an analysis reads and writes: the registry, the settings, the results, the
/// suggestions, the patterns, and the analyst's workflow.
pub trait AnalysisStore:
    AgentRegistry + ConfigStore + LearningStore + ImprovementStore + PatternStore + WorkflowStore
{
}

impl<S> AnalysisStore for S where
    S: AgentRegistry
        + ConfigStore
        + LearningStore
        + ImprovementStore
        + PatternStore
        + WorkflowStore
        + ?Sized
{
}

/// What one analysis read and wrote.
#[derive(Debug, Clone)]
pub struct AnalysisRun {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// The agent calls the window held.
    pub calls: usize,
    /// New suggestions and open ones refreshed.
    pub written: Vec<StoredSuggestion>,
    /// The workflow that asks the tenant's analyst, if it has one.
    pub advisor_workflow: Option<WorkflowId>,
}

/// What an analysis needs to ask the tenant's analyst: a workflow of one task, sent to
/// routing.
pub struct Advisor<'a, Q: ?Sized> {
    pub queue: &'a Q,
    pub settings: &'a Settings,
}

/// Analyses the tenant's last `window_ms` and writes what the rules find: new suggestions and
/// the figures of open ones found again; refreshes the patterns; measures pending impacts.
pub async fn analyze<S, Q>(
    store: &S,
    advisor: &Advisor<'_, Q>,
    tenant: &TenantId,
    window_ms: i64,
    now: i64,
) -> Result<AnalysisRun, StoreError>
where
    S: AnalysisStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    let since = now - window_ms;
    let list = store.agent_list(tenant).await?;
    let names: Vec<AgentName> = list.agents.iter().map(|a| a.name.clone()).collect();
    let config = store.tenant_config(tenant).await?;
    let circuits = store.circuits(tenant, &names).await?;
    let results = results_between(store, tenant, &names, since, now).await?;
    refresh_patterns(store, tenant, &results, now).await?;
    let calls: Vec<CallFact> = results.iter().map(call_fact).collect();
    let agents = list
        .agents
        .iter()
        .map(|agent| AgentFacts {
            name: agent.name.to_string(),
            kind: agent.kind().as_str().to_string(),
            model: match &agent.target {
                AgentTarget::Openai(target) => Some(target.model.clone()),
                AgentTarget::Bedrock(target) => Some(target.model_id.clone()),
                AgentTarget::Http { .. } | AgentTarget::Lambda { .. } => None,
            },
            capabilities: agent.capabilities.clone(),
            enabled: agent.enabled,
            version: agent.version,
            max_concurrency: agent.max_concurrency,
            timeout_ms: agent.timeout_ms,
            // What the circuit record says: open now, or opened within the window.
            circuit_opens: circuits.get(agent.name.as_str()).map_or(0, |c| {
                u32::from(c.open || c.opened_at_ms.is_some_and(|at| at >= since))
            }),
            has_health_check: agent.health_check.is_some(),
        })
        .collect();
    let evidence = Evidence {
        window_start_ms: since,
        window_end_ms: now,
        agents,
        calls,
        strategies: config
            .capabilities
            .iter()
            .filter_map(|(capability, defaults)| {
                Some((capability.clone(), defaults.routing?.as_str().to_string()))
            })
            .collect(),
        priority_multipliers: config.multipliers.clone(),
    };
    let found = improvements::analyze(&evidence);
    let mut kept = store.suggestions(tenant).await?;
    let mut written = Vec::with_capacity(found.len());
    for suggestion in found {
        let found = Found {
            suggestion,
            analyzer: RULES,
            window_ms,
        };
        if let Some(stored) = keep(store, tenant, &mut kept, found, now).await? {
            written.push(stored);
        }
    }
    measure_impacts(store, tenant, &mut kept, now).await?;
    let analyst = list
        .agents
        .iter()
        .any(|a| a.enabled && a.has_capability(advice::ANALYZE));
    let advisor_workflow = if analyst {
        let digest = advice::advisor_input(&evidence, &improvements::analyze(&evidence));
        Some(ask_analyst(store, advisor, tenant, digest, window_ms, now).await?)
    } else {
        None
    };
    Ok(AnalysisRun {
        window_start_ms: since,
        window_end_ms: now,
        calls: evidence.calls.len(),
        written,
        advisor_workflow,
    })
}

/// Submits the analyst's task: routed by its capability like any task, retried like any, and
/// kept when it ends ([`on_task_ended`]). A lost send is sent again by cleanup.
async fn ask_analyst<S, Q>(
    store: &S,
    advisor: &Advisor<'_, Q>,
    tenant: &TenantId,
    digest: serde_json::Value,
    window_ms: i64,
    now: i64,
) -> Result<WorkflowId, StoreError>
where
    S: WorkflowStore + ?Sized,
    Q: TaskQueue + ?Sized,
{
    let workflow_id =
        WorkflowId::parse(&uuid::Uuid::now_v7().to_string()).expect("a UUID is a workflow id");
    let task_id = TaskId::parse("analyze").expect("a task id");
    let profile = TaskProfile {
        advice_window_ms: Some(window_ms),
        ..TaskProfile::default()
    };
    let settings = advisor.settings;
    let workflow = NewWorkflow {
        tenant: tenant.clone(),
        workflow_id: workflow_id.clone(),
        name: "improvements analysis".into(),
        created_at_ms: now,
        dispatch_until_ms: now + settings.dispatch_timeout.as_millis() as i64,
        deadline_at_ms: None,
        check_at_ms: now + settings.repair_after.as_millis() as i64,
        counted: false,
        tasks: vec![NewTask {
            id: task_id.clone(),
            capability: advice::ANALYZE.into(),
            profile: profile.clone(),
            input: digest,
            depends_on: Vec::new(),
            dependents: Vec::new(),
            status: TaskStatus::Queued,
            dispatch_until_ms: None,
            retry: None,
            fallback: true,
            timeout_ms: None,
        }],
    };
    store.create_workflow(&workflow).await?;
    let task = TaskRef {
        tenant: tenant.clone(),
        workflow_id: workflow_id.clone(),
        task_id,
        attempt: 1,
    };
    let message = RouteMessage::new(task, advice::ANALYZE.to_string(), profile);
    if let Err(error) = advisor.queue.send_route(&[message]).await {
        // The task holds a dispatch lease: cleanup sends it when the lease runs out.
        tracing::error!(%error, "the analyst's task not sent; cleanup will send it");
    }
    Ok(workflow_id)
}

/// Keeps the suggestions of an analyst's answer when its task succeeds, marked as its own;
/// nothing for any other task. A redelivery writes nothing twice: each is created once, or
/// refreshes the analyst's open suggestion of the same subject.
pub async fn on_task_ended<S>(store: &S, record: &TaskRecord, now_ms: i64) -> Result<(), StoreError>
where
    S: WorkflowStore + ImprovementStore + ?Sized,
{
    let Some(window_ms) = record.profile.advice_window_ms else {
        return Ok(());
    };
    if record.status != TaskStatus::Succeeded {
        return Ok(());
    }
    let Some(analyst) = &record.agent else {
        return Ok(());
    };
    let output = store.whole_output(record).await?;
    let (advised, refused) = advice::advised(output.as_ref().unwrap_or(&serde_json::Value::Null));
    for why in &refused {
        tracing::warn!(tenant = %record.tenant, %analyst, reason = %why, "an analyst's suggestion left out");
    }
    let tenant = &record.tenant;
    let mut kept = store.suggestions(tenant).await?;
    for suggestion in advised {
        let found = Found {
            suggestion,
            analyzer: analyst.as_str(),
            window_ms,
        };
        keep(store, tenant, &mut kept, found, now_ms).await?;
    }
    Ok(())
}

/// One finding, with who found it and over what window.
struct Found<'a> {
    suggestion: Suggestion,
    analyzer: &'a str,
    window_ms: i64,
}

/// Writes a finding: the open suggestion of its finder, rule and subject refreshed, or a new
/// one.
async fn keep<S>(
    store: &S,
    tenant: &TenantId,
    kept: &mut Vec<StoredSuggestion>,
    found: Found<'_>,
    now: i64,
) -> Result<Option<StoredSuggestion>, StoreError>
where
    S: ImprovementStore + ?Sized,
{
    let Found {
        suggestion,
        analyzer,
        window_ms,
    } = found;
    let same = |s: &&StoredSuggestion| {
        s.analyzer == analyzer
            && s.suggestion.rule == suggestion.rule
            && s.suggestion.subject == suggestion.subject
    };
    if let Some(open) = kept
        .iter()
        .filter(same)
        .find(|s| s.status == SuggestionStatus::Open)
    {
        let refreshed = open.refreshed(suggestion, window_ms, now);
        // Lost to a person's action or another analysis: theirs stands.
        return Ok(store
            .update_suggestion(tenant, &refreshed)
            .await?
            .then_some(refreshed));
    }
    let earlier = kept.iter().filter(same).count();
    // The rules' ids stay as they were; an analyst's are its own.
    let rule = if analyzer == RULES {
        suggestion.rule.clone()
    } else {
        format!("{}#{analyzer}", suggestion.rule)
    };
    let id = suggestion_id(&rule, &suggestion.subject, earlier);
    let new = StoredSuggestion::found(id, suggestion, analyzer, window_ms, now);
    if store.create_suggestion(tenant, &new).await? {
        kept.push(new.clone());
        Ok(Some(new))
    } else {
        // Another analysis wrote it first: one record, not two.
        Ok(None)
    }
}

/// Measures the impact of each applied suggestion whose impact is not final yet, and records
/// each that both windows hold enough calls for.
pub async fn measure_impacts<S>(
    store: &S,
    tenant: &TenantId,
    kept: &mut [StoredSuggestion],
    now: i64,
) -> Result<(), StoreError>
where
    S: AgentRegistry + LearningStore + ImprovementStore + ?Sized,
{
    let Some(earliest) = kept
        .iter()
        .filter_map(|s| s.impact_windows(now))
        .map(|w| w.before.0)
        .min()
    else {
        return Ok(());
    };
    let list = store.agent_list(tenant).await?;
    let names: Vec<AgentName> = list.agents.iter().map(|a| a.name.clone()).collect();
    let calls: Vec<CallFact> = results_between(store, tenant, &names, earliest, now)
        .await?
        .iter()
        .map(call_fact)
        .collect();
    for suggestion in kept.iter_mut() {
        let Some(windows) = suggestion.impact_windows(now) else {
            continue;
        };
        let impact = improvements::impact(
            suggestion.metric(),
            &within(&calls, windows.before),
            &within(&calls, windows.after),
        );
        let Some(impact) = impact else { continue };
        let measured = suggestion.measured(impact, &windows, now);
        if store.update_suggestion(tenant, &measured).await? {
            *suggestion = measured;
        }
    }
    Ok(())
}

/// The tenant's results that finished in `[since, until]`, newest first per agent.
async fn results_between<S>(
    store: &S,
    tenant: &TenantId,
    agents: &[AgentName],
    since: i64,
    until: i64,
) -> Result<Vec<PastResult>, StoreError>
where
    S: LearningStore + ?Sized,
{
    let query = ResultQuery {
        task_type: None,
        success: None,
        since_ms: since,
        until_ms: until,
        limit: CALLS_PER_AGENT,
    };
    let query = &query;
    // Owned names: futures that borrow from the iterator are not `Send` for every lifetime.
    let found: Vec<Vec<PastResult>> = stream::iter(agents.to_vec())
        .map(|agent| async move { store.past_results(tenant, &agent, query).await })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

/// Brings each task type's patterns up to what the window's results show: those that stopped
/// holding closed, new ones opened (see [`baton_types::patterns`]).
async fn refresh_patterns<S>(
    store: &S,
    tenant: &TenantId,
    results: &[PastResult],
    now: i64,
) -> Result<(), StoreError>
where
    S: PatternStore + ?Sized,
{
    let mut by_type: BTreeMap<&str, Vec<PastResult>> = BTreeMap::new();
    for r in results {
        by_type
            .entry(r.task_type.as_str())
            .or_default()
            .push(r.clone());
    }
    for (task_type, results) in by_type.into_iter().take(MAX_PATTERN_TYPES) {
        let kept = store.patterns(tenant, task_type).await?;
        let (closed, opened) = patterns::reconcile(&kept, &patterns::holding(&results), now);
        for pattern in &closed {
            store.close_pattern(tenant, task_type, pattern).await?;
        }
        for pattern in &opened {
            store.open_pattern(tenant, task_type, pattern).await?;
        }
    }
    Ok(())
}
