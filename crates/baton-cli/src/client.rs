//! The client commands: each asks the API through [`ApiClient`] and prints the answer, as JSON
//! with `--json`, else as [`render`] shows it to people.

use std::error::Error;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::ApiClient;
use crate::options::{
    ClientOptions, GraphFormat, GraphOptions, SubmitOptions, WorkflowOptions, WorkflowsOptions,
};
use crate::progress::{Progress, ProgressView};
use crate::render;

/// How often `submit` reads the workflow while it runs.
const POLL_EVERY: Duration = Duration::from_millis(300);

type Outcome<T = ()> = Result<T, Box<dyn Error>>;

/// Writes the API's answer as JSON with `--json`, else as `readable` renders it.
fn print(
    out: &mut dyn Write,
    json: bool,
    answer: &Value,
    readable: impl FnOnce(&Value) -> String,
) -> Outcome {
    if json {
        writeln!(out, "{answer:#}")?;
    } else {
        write!(out, "{}", readable(answer))?;
    }
    Ok(out.flush()?)
}

/// Submits a workflow file and follows it until it ends, showing its progress on `progress`.
/// Prints the submission and the finished workflow (both as JSON with `--json`), and returns the
/// finished workflow; an error if it did not succeed.
pub async fn submit(
    options: SubmitOptions,
    out: &mut dyn Write,
    mut progress: ProgressView<'_>,
) -> Outcome<Value> {
    let SubmitOptions {
        file,
        timeout,
        follow: follow_events,
        client: ClientOptions { target, json },
    } = options;
    let body = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let api = ApiClient::new(&target)?;
    let accepted = api.post("/v1/workflows", &[], Some(body)).await?;
    print(out, json, &accepted, render::submitted)?;
    let id = accepted["workflow_id"]
        .as_str()
        .ok_or("no workflow_id in the answer")?;
    let timeout = timeout.map(Duration::from_secs_f64);
    if follow_events {
        crate::events::follow(&api, id, timeout, json, out).await?;
    }
    let followed = follow(&api, id, timeout, &mut progress).await;
    progress.finish();
    let workflow = followed?;
    print(out, json, &workflow, render::workflow_summary)?;
    match workflow["status"].as_str() {
        Some("succeeded") => Ok(workflow),
        status => Err(format!("workflow {id} ended {}", status.unwrap_or("unknown")).into()),
    }
}

/// Reads the workflow until it ends (or `timeout` passes), showing each change.
async fn follow(
    api: &ApiClient,
    id: &str,
    timeout: Option<Duration>,
    progress: &mut ProgressView<'_>,
) -> Outcome<Value> {
    let started = Instant::now();
    let path = format!("/v1/workflows/{id}");
    loop {
        match api.get(&path, &[]).await {
            Ok(workflow) => {
                let now = Progress::of(&workflow);
                progress.show(&now)?;
                if now.is_finished() {
                    return Ok(workflow);
                }
            }
            // A moment without DynamoDB or SQS is not the workflow's end: ask again.
            Err(error) if error.is_transient() => {}
            Err(error) => return Err(error.into()),
        }
        if let Some(timeout) = timeout.filter(|t| started.elapsed() >= *t) {
            return Err(format!(
                "stopped following workflow {id} after {} s; it goes on \
                 (`status {id}` shows it)",
                timeout.as_secs_f64()
            )
            .into());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Lists workflows, newest first; `--all` follows the pages to the end.
pub async fn workflows(options: WorkflowsOptions, out: &mut dyn Write) -> Outcome {
    let api = ApiClient::new(&options.client.target)?;
    let limit = options.limit.map(|limit| limit.to_string());
    let filters: Vec<(&str, &str)> = [
        ("status", options.status.as_deref()),
        ("name", options.name.as_deref()),
        ("since", options.since.as_deref()),
        ("limit", limit.as_deref()),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key, value?)))
    .collect();
    let mut cursor = options.cursor.clone();
    let mut workflows = Vec::new();
    let page = loop {
        let mut query = filters.clone();
        query.extend(cursor.as_deref().map(|c| ("cursor", c)));
        let page = api.get("/v1/workflows", &query).await?;
        workflows.extend(page["workflows"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            // A cursor that does not move would loop forever: stop there.
            Some(next) if options.all && cursor.as_deref() != Some(next) => {
                cursor = Some(next.to_string());
            }
            _ => break page,
        }
    };
    let answer = if options.all {
        json!({ "workflows": workflows, "next_cursor": page["next_cursor"] })
    } else {
        page
    };
    print(out, options.client.json, &answer, |answer| {
        let mut text = render::workflows_table(&workflows);
        if let Some(next) = answer["next_cursor"].as_str() {
            text.push_str(&format!("more: --cursor {next} (or --all)\n"));
        }
        text
    })
}

/// A workflow's status and each task's status, agent and attempt.
pub async fn status(options: WorkflowOptions, out: &mut dyn Write) -> Outcome {
    let api = ApiClient::new(&options.client.target)?;
    let workflow = api
        .get(&format!("/v1/workflows/{}", options.id), &[])
        .await?;
    print(
        out,
        options.client.json,
        &workflow,
        render::workflow_summary,
    )
}

/// A workflow's events, one line each.
pub async fn history(options: WorkflowOptions, out: &mut dyn Write) -> Outcome {
    let api = ApiClient::new(&options.client.target)?;
    let history = api
        .get(&format!("/v1/workflows/{}/history", options.id), &[])
        .await?;
    print(out, options.client.json, &history, |history| {
        render::history_table(history["events"].as_array().map_or(&[][..], Vec::as_slice))
    })
}

/// A workflow's task graph as the API draws it (text); with `--json`, inside a JSON object.
pub async fn graph(options: GraphOptions, out: &mut dyn Write) -> Outcome {
    let GraphOptions { workflow, format } = options;
    let format = match format {
        GraphFormat::Mermaid => "mermaid",
        GraphFormat::Dot => "dot",
    };
    let api = ApiClient::new(&workflow.client.target)?;
    let graph = api
        .get_text(
            &format!("/v1/workflows/{}/graph", workflow.id),
            &[("format", format)],
        )
        .await?;
    let answer = json!({ "workflow_id": workflow.id, "format": format, "graph": graph });
    print(out, workflow.client.json, &answer, |_| {
        if graph.ends_with('\n') {
            graph.clone()
        } else {
            format!("{graph}\n")
        }
    })
}

/// `POST /v1/workflows/{id}/{action}`: cancel, pause, resume or retry.
pub async fn control(
    options: WorkflowOptions,
    action: &str,
    query: &[(&str, &str)],
    out: &mut dyn Write,
) -> Outcome {
    let api = ApiClient::new(&options.client.target)?;
    let answer = api
        .post(
            &format!("/v1/workflows/{}/{action}", options.id),
            query,
            None,
        )
        .await?;
    print(out, options.client.json, &answer, render::readable)
}

/// The registered agents, with health and circuit.
pub async fn agents(options: ClientOptions, out: &mut dyn Write) -> Outcome {
    let api = ApiClient::new(&options.target)?;
    let answer = api.get("/v1/agents", &[]).await?;
    print(out, options.json, &answer, |answer| {
        render::agents_table(answer["agents"].as_array().map_or(&[][..], Vec::as_slice))
    })
}

/// The API's statistics, in the generic readable form.
pub async fn stats(options: ClientOptions, out: &mut dyn Write) -> Outcome {
    let api = ApiClient::new(&options.target)?;
    let answer = api.get("/v1/stats", &[]).await?;
    print(out, options.json, &answer, render::readable)
}
