//! A picture of a workflow's DAG, as Mermaid or Graphviz DOT: each task with its status (and
//! its agent, once it has one), and the critical path marked.

use std::collections::HashMap;
use std::fmt::Write;

use crate::records::{TaskRecord, WorkflowView};
use crate::task::TaskStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

impl GraphFormat {
    pub const NAMES: [&'static str; 2] = ["mermaid", "dot"];

    pub fn parse(name: &str) -> Option<GraphFormat> {
        match name {
            "mermaid" => Some(GraphFormat::Mermaid),
            "dot" => Some(GraphFormat::Dot),
            _ => None,
        }
    }
}

/// Fill and stroke per status, shared by both formats.
fn colours(status: TaskStatus) -> (&'static str, &'static str) {
    match status {
        TaskStatus::Waiting => ("#f3f4f6", "#9ca3af"),
        TaskStatus::Queued => ("#e0f2fe", "#0284c7"),
        TaskStatus::Running => ("#fef9c3", "#ca8a04"),
        TaskStatus::Succeeded => ("#dcfce7", "#16a34a"),
        TaskStatus::Failed => ("#fee2e2", "#dc2626"),
        TaskStatus::Skipped => ("#f5f5f4", "#a8a29e"),
        TaskStatus::Cancelled => ("#ede9fe", "#7c3aed"),
    }
}

/// How long a task took (or has taken so far); 0 until it started.
fn elapsed_ms(task: &TaskRecord, now_ms: i64) -> i64 {
    let started = task
        .attempts
        .iter()
        .filter_map(|a| a.started_at_ms)
        .chain(task.started_at_ms)
        .min();
    let ended = task.finished_at_ms.unwrap_or(now_ms);
    started.map_or(0, |s| (ended - s).max(0))
}

/// The positions of the critical path's tasks, from a root to a sink: the DAG's heaviest
/// chain of run times. Each task weighs a millisecond more than it ran, so that before
/// anything ran the longest chain is critical. Empty for a damaged workflow.
pub fn critical_path(view: &WorkflowView, now_ms: i64) -> Vec<usize> {
    let Ok(dag) = view.dag() else {
        return Vec::new();
    };
    let index = positions(view);
    let (path, _) = dag.critical_path(|id| {
        index
            .get(id)
            .map_or(0.0, |&i| (elapsed_ms(&view.tasks[i], now_ms) + 1) as f64)
    });
    path.iter()
        .filter_map(|id| index.get(id).copied())
        .collect()
}

/// Each task's position in the workflow, by id.
fn positions(view: &WorkflowView) -> HashMap<&str, usize> {
    view.tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect()
}

/// The picture of the workflow in `format`.
pub fn render(view: &WorkflowView, format: GraphFormat, now_ms: i64) -> String {
    let path = critical_path(view, now_ms);
    let on_path: Vec<bool> = (0..view.tasks.len()).map(|i| path.contains(&i)).collect();
    let index = positions(view);
    // Edges in task order, each marked when both ends are consecutive on the path.
    let mut edges = Vec::new();
    for (to, task) in view.tasks.iter().enumerate() {
        for from in task.depends_on.iter().filter_map(|d| index.get(d.as_str())) {
            let critical = path.windows(2).any(|w| w[0] == *from && w[1] == to);
            edges.push((*from, to, critical));
        }
    }
    match format {
        GraphFormat::Mermaid => mermaid(view, &on_path, &edges),
        GraphFormat::Dot => dot(view, &on_path, &edges),
    }
}

fn label(task: &TaskRecord) -> (String, String) {
    let detail = match &task.agent {
        Some(agent) => format!("{} · {agent}", task.status),
        None => task.status.to_string(),
    };
    (task.id.to_string(), detail)
}

fn mermaid(view: &WorkflowView, on_path: &[bool], edges: &[(usize, usize, bool)]) -> String {
    let escape = |s: &str| s.replace('"', "#quot;");
    let mut out = String::from("flowchart LR\n");
    for (i, task) in view.tasks.iter().enumerate() {
        let (name, detail) = label(task);
        let _ = writeln!(
            out,
            "    t{i}[\"{}<br/>{}\"]:::{}",
            escape(&name),
            escape(&detail),
            task.status
        );
    }
    for (from, to, critical) in edges {
        let arrow = if *critical { "==>" } else { "-->" };
        let _ = writeln!(out, "    t{from} {arrow} t{to}");
    }
    let mut statuses: Vec<TaskStatus> = view.tasks.iter().map(|t| t.status).collect();
    statuses.sort_by_key(|s| s.as_str());
    statuses.dedup();
    for status in statuses {
        let (fill, stroke) = colours(status);
        let _ = writeln!(out, "    classDef {status} fill:{fill},stroke:{stroke}");
    }
    for (i, _) in on_path.iter().enumerate().filter(|(_, on)| **on) {
        let _ = writeln!(out, "    style t{i} stroke-width:4px");
    }
    out
}

fn dot(view: &WorkflowView, on_path: &[bool], edges: &[(usize, usize, bool)]) -> String {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = format!(
        "digraph \"{}\" {{\n    rankdir=LR;\n    node [shape=box, style=\"rounded,filled\"];\n",
        escape(&view.workflow.name)
    );
    for (i, task) in view.tasks.iter().enumerate() {
        let (name, detail) = label(task);
        let (fill, stroke) = colours(task.status);
        let width = if on_path[i] { 3 } else { 1 };
        let _ = writeln!(
            out,
            "    t{i} [label=\"{}\\n{}\", fillcolor=\"{fill}\", color=\"{stroke}\", penwidth={width}];",
            escape(&name),
            escape(&detail)
        );
    }
    for (from, to, critical) in edges {
        let style = if *critical {
            " [penwidth=3, color=\"#dc2626\"]"
        } else {
            ""
        };
        let _ = writeln!(out, "    t{from} -> t{to}{style};");
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::fixtures::{task, view};

    /// a → b (slow), a → c (quick), b and c → d.
    fn diamond() -> WorkflowView {
        view(vec![
            task("a", &[], TaskStatus::Succeeded, Some((0, 10))),
            task("b", &["a"], TaskStatus::Succeeded, Some((10, 80))),
            task("c", &["a"], TaskStatus::Succeeded, Some((10, 20))),
            task("d", &["b", "c"], TaskStatus::Succeeded, Some((80, 90))),
        ])
    }

    #[test]
    fn the_critical_path_follows_the_slowest_chain() {
        assert_eq!(critical_path(&diamond(), 100), [0, 1, 3]);
    }

    #[test]
    fn before_anything_ran_the_longest_chain_is_critical() {
        let v = view(vec![
            task("a", &[], TaskStatus::Queued, None),
            task("b", &["a"], TaskStatus::Waiting, None),
            task("c", &[], TaskStatus::Queued, None),
        ]);
        assert_eq!(critical_path(&v, 0), [0, 1]);
    }

    #[test]
    fn mermaid_marks_statuses_agents_and_the_critical_edges() {
        let text = render(&diamond(), GraphFormat::Mermaid, 100);
        assert!(text.starts_with("flowchart LR\n"));
        assert!(
            text.contains("t0[\"a<br/>succeeded · agent-1\"]:::succeeded"),
            "{text}"
        );
        assert!(text.contains("t0 ==> t1"), "{text}");
        assert!(text.contains("t0 --> t2"), "{text}");
        assert!(text.contains("t1 ==> t3"), "{text}");
        assert!(text.contains("classDef succeeded"), "{text}");
        assert!(text.contains("style t3 stroke-width:4px"), "{text}");
        assert!(!text.contains("style t2 "), "{text}");
    }

    #[test]
    fn dot_escapes_names_and_marks_the_critical_edges() {
        let text = render(&diamond(), GraphFormat::Dot, 100);
        assert!(
            text.starts_with("digraph \"a \\\"quoted\\\" name\" {"),
            "{text}"
        );
        assert!(text.contains("t0 -> t1 [penwidth=3"), "{text}");
        assert!(text.contains("t0 -> t2;"), "{text}");
        assert!(text.trim_end().ends_with('}'));
    }
}
