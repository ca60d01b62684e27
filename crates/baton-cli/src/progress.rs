//! How `submit` shows a workflow running: how many of its tasks ended out of all, and which
//! run now. A bar on a terminal; elsewhere (CI, a pipe) one line per change.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Task statuses after which a task does nothing more.
const TASK_ENDED: [&str; 4] = ["succeeded", "failed", "skipped", "cancelled"];
/// Workflow statuses from which it may still change by itself; any other is where it ended.
const WORKFLOW_ACTIVE: [&str; 3] = ["running", "paused", "cancelling"];

/// A workflow's progress, read from `GET /v1/workflows/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub status: String,
    pub ended: usize,
    pub total: usize,
    /// The running tasks' ids, in submission order.
    pub running: Vec<String>,
}

impl Progress {
    pub fn of(workflow: &Value) -> Progress {
        let tasks = workflow["tasks"].as_array().map_or(&[][..], Vec::as_slice);
        let status_of = |task: &Value| task["status"].as_str().unwrap_or_default().to_string();
        Progress {
            status: workflow["status"].as_str().unwrap_or("unknown").to_string(),
            ended: tasks
                .iter()
                .filter(|t| TASK_ENDED.contains(&status_of(t).as_str()))
                .count(),
            total: tasks.len(),
            running: tasks
                .iter()
                .filter(|t| status_of(t) == "running")
                .map(|t| t["id"].as_str().unwrap_or("?").to_string())
                .collect(),
        }
    }

    /// Whether the workflow ended (succeeded, failed, cancelled): nothing more will change.
    pub fn is_finished(&self) -> bool {
        !WORKFLOW_ACTIVE.contains(&self.status.as_str())
    }

    /// What runs now, and the workflow's status unless it is simply running:
    /// `running: fetch, summarize; workflow paused`.
    pub fn details(&self) -> String {
        let mut parts = Vec::new();
        if !self.running.is_empty() {
            parts.push(format!("running: {}", self.running.join(", ")));
        }
        if self.status != "running" {
            parts.push(format!("workflow {}", self.status));
        }
        parts.join("; ")
    }

    /// `3/7 tasks ended; running: fetch, summarize`.
    pub fn line(&self) -> String {
        let count = format!("{}/{} tasks ended", self.ended, self.total);
        match self.details() {
            details if details.is_empty() => count,
            details => format!("{count}; {details}"),
        }
    }
}

/// Where progress is shown; each change once.
pub struct ProgressView<'a> {
    display: Display<'a>,
    shown: Option<Progress>,
}

enum Display<'a> {
    Bar(ProgressBar),
    Lines(Box<dyn Write + 'a>),
}

impl<'a> ProgressView<'a> {
    /// A bar if stderr is a terminal, else plain lines on stderr.
    pub fn on_stderr() -> ProgressView<'static> {
        if std::io::stderr().is_terminal() {
            ProgressView::bar()
        } else {
            ProgressView::lines(std::io::stderr())
        }
    }

    /// A bar on stderr, drawn from the first progress shown on.
    pub fn bar() -> ProgressView<'static> {
        let bar = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("[{elapsed}] {bar:30} {pos}/{len} tasks ended{msg}")
        {
            bar.set_style(style);
        }
        ProgressView {
            display: Display::Bar(bar),
            shown: None,
        }
    }

    /// One line per change on `writer`.
    pub fn lines(writer: impl Write + 'a) -> ProgressView<'a> {
        ProgressView {
            display: Display::Lines(Box::new(writer)),
            shown: None,
        }
    }

    /// Shows `progress` unless it is what is shown already.
    pub fn show(&mut self, progress: &Progress) -> std::io::Result<()> {
        if self.shown.as_ref() == Some(progress) {
            return Ok(());
        }
        match &mut self.display {
            Display::Bar(bar) => {
                bar.set_length(progress.total as u64);
                bar.set_position(progress.ended as u64);
                bar.set_message(match progress.details() {
                    details if details.is_empty() => details,
                    details => format!("; {details}"),
                });
                if self.shown.is_none() {
                    // The elapsed time keeps moving between changes.
                    bar.enable_steady_tick(Duration::from_millis(200));
                }
            }
            Display::Lines(writer) => {
                writeln!(writer, "{}", progress.line())?;
                writer.flush()?;
            }
        }
        self.shown = Some(progress.clone());
        Ok(())
    }

    /// Takes the bar off the screen, so what follows prints clean.
    pub fn finish(&mut self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workflow(status: &str, tasks: &[(&str, &str)]) -> Value {
        let tasks: Vec<Value> = tasks
            .iter()
            .map(|(id, status)| json!({ "id": id, "status": status }))
            .collect();
        json!({ "workflow_id": "w1", "status": status, "tasks": tasks })
    }

    #[test]
    fn ended_counts_every_final_task_status_and_running_names_the_tasks() {
        let progress = Progress::of(&workflow(
            "running",
            &[
                ("a", "succeeded"),
                ("b", "failed"),
                ("c", "skipped"),
                ("d", "cancelled"),
                ("fetch", "running"),
                ("q", "queued"),
                ("summarize", "running"),
                ("w", "waiting"),
            ],
        ));
        assert_eq!(progress.ended, 4);
        assert_eq!(progress.total, 8);
        assert_eq!(
            progress.line(),
            "4/8 tasks ended; running: fetch, summarize"
        );
        assert!(!progress.is_finished());
    }

    #[test]
    fn a_workflow_not_simply_running_says_its_status() {
        let paused = Progress::of(&workflow("paused", &[("a", "succeeded"), ("b", "waiting")]));
        assert_eq!(paused.line(), "1/2 tasks ended; workflow paused");
        assert!(!paused.is_finished());
        let cancelling = Progress::of(&workflow("cancelling", &[("a", "running")]));
        assert_eq!(
            cancelling.line(),
            "0/1 tasks ended; running: a; workflow cancelling"
        );
        assert!(!cancelling.is_finished());
        let done = Progress::of(&workflow("succeeded", &[("a", "succeeded")]));
        assert_eq!(done.line(), "1/1 tasks ended; workflow succeeded");
        assert!(done.is_finished());
        assert!(Progress::of(&workflow("cancelled", &[])).is_finished());
    }

    #[test]
    fn plain_lines_show_each_change_once() {
        let mut written = Vec::new();
        let mut view = ProgressView::lines(&mut written);
        for snapshot in [
            workflow("running", &[("a", "queued"), ("b", "waiting")]),
            workflow("running", &[("a", "running"), ("b", "waiting")]),
            workflow("running", &[("a", "running"), ("b", "waiting")]),
            workflow("succeeded", &[("a", "succeeded"), ("b", "succeeded")]),
        ] {
            view.show(&Progress::of(&snapshot)).unwrap();
        }
        view.finish();
        drop(view);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            "0/2 tasks ended\n\
             0/2 tasks ended; running: a\n\
             2/2 tasks ended; workflow succeeded\n"
        );
    }
}
