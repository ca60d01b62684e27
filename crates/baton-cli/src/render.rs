//! How the client commands print the API's answers for people: tables of workflows, agents and
//! events, a workflow's summary, and a generic readable form for any other JSON. Pure: each
//! function takes the API's JSON and returns text.

use serde_json::{Map, Value};

use crate::progress::Progress;

/// Left-aligned columns two spaces apart, under a header; the last column is not padded, so
/// a long cell there does not widen the others.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `POST /v1/workflows`'s answer: the id and the plan's shape.
pub fn submitted(accepted: &Value) -> String {
    let plan = &accepted["plan"];
    let mut line = format!("submitted workflow {}", text(&accepted["workflow_id"]));
    if let Some(stages) = plan["stages"].as_array() {
        line.push_str(&format!(": {} stages", stages.len()));
    }
    if let Some(path) = plan["critical_path"].as_array() {
        let path: Vec<String> = path.iter().map(text).collect();
        line.push_str(&format!(", critical path {}", path.join(" → ")));
    }
    if let Some(ms) = plan["estimated_duration_ms"].as_f64() {
        line.push_str(&format!(", about {:.1} s", ms / 1000.0));
    }
    line.push('\n');
    line
}

/// `GET /v1/workflows`'s page, one row per workflow.
pub fn workflows_table(workflows: &[Value]) -> String {
    if workflows.is_empty() {
        return "no workflows\n".into();
    }
    let rows: Vec<Vec<String>> = workflows
        .iter()
        .map(|w| {
            let tasks = w["task_count"]
                .as_u64()
                .map_or_else(|| "-".into(), |n| n.to_string());
            vec![
                text(&w["workflow_id"]),
                text(&w["name"]),
                text(&w["status"]),
                tasks,
                text(&w["created_at"]),
                text(&w["finished_at"]),
            ]
        })
        .collect();
    table(
        &["WORKFLOW", "NAME", "STATUS", "TASKS", "CREATED", "FINISHED"],
        &rows,
    )
}

/// `GET /v1/workflows/{id}` for people: the workflow's status, then each task with its status,
/// agent, attempt and output or error.
pub fn workflow_summary(workflow: &Value) -> String {
    let progress = Progress::of(workflow);
    let mut status = text(&workflow["status"]);
    if let Some(task) = workflow["failed_task"].as_str() {
        status.push_str(&format!(" (task {task} failed)"));
    }
    if !workflow["error"].is_null() {
        status.push_str(&format!(" ({})", error_text(&workflow["error"])));
    }
    let mut out = format!(
        "workflow  {} ({})\nstatus    {status}\ntasks     {}/{} ended\ncreated   {}\n",
        text(&workflow["workflow_id"]),
        text(&workflow["name"]),
        progress.ended,
        progress.total,
        text(&workflow["created_at"]),
    );
    if !workflow["finished_at"].is_null() {
        out.push_str(&format!("finished  {}\n", text(&workflow["finished_at"])));
    }
    let tasks = workflow["tasks"].as_array().map_or(&[][..], Vec::as_slice);
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let result = match (&t["error"], &t["output"]) {
                (Value::Null, Value::Null) => String::new(),
                (Value::Null, output) => one_line(output),
                (error, _) => error_text(error),
            };
            vec![
                text(&t["id"]),
                text(&t["status"]),
                text(&t["agent"]),
                text(&t["attempt"]),
                result,
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["TASK", "STATUS", "AGENT", "ATTEMPT", "OUTPUT OR ERROR"],
        &rows,
    ));
    out
}

/// `GET /v1/workflows/{id}/history`'s events, one line each, oldest first as the API sends them.
pub fn history_table(events: &[Value]) -> String {
    if events.is_empty() {
        return "no events\n".into();
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let details = match &e["details"] {
                Value::Null => String::new(),
                Value::Object(fields) if fields.is_empty() => String::new(),
                details => one_line(details),
            };
            vec![
                text(&e["at"]),
                // The event's kind: `type`, or `event` as the API names it now.
                text(e.get("type").unwrap_or(&e["event"])),
                text(&e["task"]),
                text(&e["attempt"]),
                text(&e["agent"]),
                details,
            ]
        })
        .collect();
    table(
        &["AT", "EVENT", "TASK", "ATTEMPT", "AGENT", "DETAILS"],
        &rows,
    )
}

/// `GET /v1/agents`, one row per agent.
pub fn agents_table(agents: &[Value]) -> String {
    if agents.is_empty() {
        return "no agents\n".into();
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let capabilities: Vec<String> = a["capabilities"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(text)
                .collect();
            vec![
                text(&a["name"]),
                a["kind"].as_str().unwrap_or("http").to_string(),
                capabilities.join(","),
                match a["enabled"].as_bool() {
                    Some(true) => "yes".into(),
                    Some(false) => "no".into(),
                    None => "-".into(),
                },
                a["health"]["status"]
                    .as_str()
                    .unwrap_or("unchecked")
                    .to_string(),
                text(&a["circuit"]["state"]),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "KIND",
            "CAPABILITIES",
            "ENABLED",
            "HEALTH",
            "CIRCUIT",
        ],
        &rows,
    )
}

/// Any JSON for people: `key: value` lines, nested objects indented under their key, and a
/// list of objects as a table.
pub fn readable(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(fields) => write_fields(&mut out, fields, 0),
        other => {
            out.push_str(&text(other));
            out.push('\n');
        }
    }
    out
}

fn write_fields(out: &mut String, fields: &Map<String, Value>, indent: usize) {
    let pad = " ".repeat(indent);
    for (key, value) in fields {
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push_str(&format!("{pad}{key}:\n"));
                write_fields(out, inner, indent + 2);
            }
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                out.push_str(&format!("{pad}{key}:\n"));
                for line in objects_table(items).lines() {
                    out.push_str(&format!("{pad}  {line}\n"));
                }
            }
            Value::Array(items) if items.is_empty() => {
                out.push_str(&format!("{pad}{key}: none\n"));
            }
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(text).collect();
                out.push_str(&format!("{pad}{key}: {}\n", items.join(", ")));
            }
            scalar => out.push_str(&format!("{pad}{key}: {}\n", text(scalar))),
        }
    }
}

/// Objects as rows under the union of their keys, in the order first seen.
fn objects_table(objects: &[Value]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for key in objects
        .iter()
        .filter_map(Value::as_object)
        .flat_map(Map::keys)
    {
        if !columns.contains(&key.as_str()) {
            columns.push(key);
        }
    }
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| columns.iter().map(|c| text(&o[*c])).collect())
        .collect();
    table(&columns, &rows)
}

/// A cell: a string as it is, `-` for nothing, a fraction to three decimals, anything else as
/// compact JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => {
            let fixed = format!("{:.3}", n.as_f64().unwrap_or_default());
            fixed
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        }
        other => other.to_string(),
    }
}

/// A task's or workflow's error: `kind: message`, or whatever shape it has, on one line.
fn error_text(error: &Value) -> String {
    match (error["kind"].as_str(), error["message"].as_str()) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (None, Some(message)) => message.to_string(),
        _ => one_line(error),
    }
}

/// Compact JSON cut to 100 characters: enough to recognise an output, `--json` has all of it.
fn one_line(value: &Value) -> String {
    let json = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match json.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &json[..cut]),
        None => json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_columns_and_leaves_the_last_unpadded() {
        let rows = vec![
            vec!["a".to_string(), "running".to_string(), "x".to_string()],
            vec![
                "longer".to_string(),
                "ok".to_string(),
                "a long last cell".to_string(),
            ],
        ];
        assert_eq!(
            table(&["ID", "STATUS", "NOTE"], &rows),
            "ID      STATUS   NOTE\n\
             a       running  x\n\
             longer  ok       a long last cell\n"
        );
    }

    #[test]
    fn a_submission_reads_as_its_id_and_plan() {
        let accepted = json!({"workflow_id": "w1", "status": "running", "plan": {
            "stages": [["clean"], ["stats", "shout"], ["report"]],
            "critical_path": ["clean", "stats", "report"], "estimated_duration_ms": 3000}});
        assert_eq!(
            submitted(&accepted),
            "submitted workflow w1: 3 stages, critical path clean → stats → report, about 3.0 s\n"
        );
        assert_eq!(
            submitted(&json!({"workflow_id": "w2"})),
            "submitted workflow w2\n"
        );
    }

    #[test]
    fn the_workflow_list_shows_each_workflow_with_its_task_count() {
        let page = json!({"workflows": [
            {"workflow_id": "w2", "name": "report", "status": "running", "task_count": 7,
             "tasks_remaining": 4, "created_at": "2026-12-04T10:00:00Z", "finished_at": null},
            {"workflow_id": "w1", "name": "diamond", "status": "succeeded", "task_count": 4,
             "tasks_remaining": 0, "created_at": "2026-12-04T09:00:00Z",
             "finished_at": "2026-12-04T09:00:03Z"}
        ], "next_cursor": null});
        assert_eq!(
            workflows_table(page["workflows"].as_array().unwrap()),
            "WORKFLOW  NAME     STATUS     TASKS  CREATED               FINISHED\n\
             w2        report   running    7      2026-12-04T10:00:00Z  -\n\
             w1        diamond  succeeded  4      2026-12-04T09:00:00Z  2026-12-04T09:00:03Z\n"
        );
        assert_eq!(workflows_table(&[]), "no workflows\n");
    }

    #[test]
    fn a_workflow_summary_shows_each_task_with_its_output_or_error() {
        let workflow = json!({
            "workflow_id": "w1", "name": "breaks", "status": "failed", "failed_task": "b",
            "error": null, "created_at": "2026-12-04T09:00:00Z",
            "finished_at": "2026-12-04T09:00:02Z",
            "tasks": [
                {"id": "a", "capability": "work", "status": "succeeded", "agent": "healthy",
                 "attempt": 1, "output": {"ok": true}, "error": null},
                {"id": "b", "capability": "explode", "status": "failed", "agent": "broken",
                 "attempt": 3, "output": null,
                 "error": {"kind": "http_status", "message": "model overloaded", "http_status": 500}},
                {"id": "c", "capability": "work", "status": "skipped", "agent": null,
                 "attempt": 0, "output": null, "error": null}
            ]
        });
        assert_eq!(
            workflow_summary(&workflow),
            "workflow  w1 (breaks)\n\
             status    failed (task b failed)\n\
             tasks     3/3 ended\n\
             created   2026-12-04T09:00:00Z\n\
             finished  2026-12-04T09:00:02Z\n\
             \n\
             TASK  STATUS     AGENT    ATTEMPT  OUTPUT OR ERROR\n\
             a     succeeded  healthy  1        {\"ok\":true}\n\
             b     failed     broken   3        http_status: model overloaded\n\
             c     skipped    -        0\n"
        );
    }

    #[test]
    fn history_events_read_one_line_each_with_what_they_carry() {
        let history = json!({"workflow_id": "w1", "status": "succeeded", "events": [
            {"at": "2026-12-04T09:00:00Z", "type": "submitted", "details": {"tasks": 2}},
            {"at": "2026-12-04T09:00:01Z", "event": "task_started", "task": "a", "attempt": 1,
             "agent": "worker"},
            {"at": "2026-12-04T09:00:02Z", "type": "task_succeeded", "task": "a", "attempt": 1,
             "agent": "worker", "details": {}}
        ]});
        assert_eq!(
            history_table(history["events"].as_array().unwrap()),
            "AT                    EVENT           TASK  ATTEMPT  AGENT   DETAILS\n\
             2026-12-04T09:00:00Z  submitted       -     -        -       {\"tasks\":2}\n\
             2026-12-04T09:00:01Z  task_started    a     1        worker\n\
             2026-12-04T09:00:02Z  task_succeeded  a     1        worker\n"
        );
    }

    #[test]
    fn the_agent_table_shows_kind_health_and_circuit() {
        let agents = json!([
            {"name": "normalizer", "kind": "http", "capabilities": ["text.normalize"],
             "enabled": true, "health": {"status": "healthy"}, "circuit": {"state": "closed"}},
            {"name": "bedrock-brief", "kind": "bedrock", "capabilities": ["text.brief", "x"],
             "enabled": false, "health": null, "circuit": {"state": "open"}}
        ]);
        assert_eq!(
            agents_table(agents.as_array().unwrap()),
            "NAME           KIND     CAPABILITIES    ENABLED  HEALTH     CIRCUIT\n\
             normalizer     http     text.normalize  yes      healthy    closed\n\
             bedrock-brief  bedrock  text.brief,x    no       unchecked  open\n"
        );
    }

    #[test]
    fn any_json_reads_as_indented_fields_with_lists_of_objects_as_tables() {
        let stats = json!({
            "routing": {"calls": 3, "service_distribution": [
                {"agent": "a", "calls": 2, "share": 0.6666666},
                {"agent": "b", "calls": 1, "share": 0.3333333, "registered": false}
            ]},
            "task_types": [],
            "tags": ["x", "y"],
            "since": null
        });
        assert_eq!(
            readable(&stats),
            "routing:\n  calls: 3\n  service_distribution:\n    \
             agent  calls  share  registered\n    \
             a      2      0.667  -\n    \
             b      1      0.333  false\n\
             task_types: none\n\
             tags: x, y\n\
             since: -\n"
        );
    }
}
