//! The client commands as one clap subcommand set, and how each is carried out. `baton` offers
//! them at its top level; `baton-local` flattens them beside its `run`.

use std::io::Write;

use clap::Subcommand;

use crate::chat::{chat, ChatOptions};
use crate::client;
use crate::options::{
    CancelOptions, ClientOptions, GraphOptions, SubmitOptions, WorkflowOptions, WorkflowsOptions,
};
use crate::progress::ProgressView;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit a workflow file to a running stack and follow it until it ends.
    ///
    /// Progress goes to stderr (a bar on a terminal, one line per change elsewhere) and the
    /// result to stdout. Exits 1 unless the workflow succeeded.
    Submit(SubmitOptions),
    /// List workflows, newest first.
    Workflows(WorkflowsOptions),
    /// Show a workflow: its status and each task's status, agent and attempt.
    Status(WorkflowOptions),
    /// Show what happened to a workflow, one line per event.
    History(WorkflowOptions),
    /// Print a workflow's task graph (Mermaid or Graphviz dot).
    Graph(GraphOptions),
    /// Cancel a workflow.
    ///
    /// Tasks not started are cancelled, and the workflow ends once the running ones end; with
    /// `--force` at once, the running tasks cancelled too.
    Cancel(CancelOptions),
    /// Pause a workflow: running tasks finish, no new task starts until `resume`.
    Pause(WorkflowOptions),
    /// Resume a paused workflow.
    Resume(WorkflowOptions),
    /// Retry a workflow that failed or was cancelled.
    ///
    /// Its tasks that did not succeed run again.
    Retry(WorkflowOptions),
    /// List the registered agents with their health and circuit.
    Agents(ClientOptions),
    /// Show the API's statistics.
    Stats(ClientOptions),
    /// Talk to a running stack's conversational agents, one turn per line.
    Chat(ChatOptions),
    /// Print a shell's completion script.
    ///
    /// For example `baton completions bash > ~/.local/share/bash-completion/completions/baton`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Carries out a client command, printing to stdout (and `submit`'s progress to stderr).
/// `app` builds the whole command line the command came from, for `completions`.
pub async fn execute(
    command: ClientCommand,
    app: fn() -> clap::Command,
) -> Result<(), Box<dyn std::error::Error>> {
    let out = &mut std::io::stdout();
    let result = match command {
        ClientCommand::Submit(options) => client::submit(options, out, ProgressView::on_stderr())
            .await
            .map(drop),
        ClientCommand::Workflows(options) => client::workflows(options, out).await,
        ClientCommand::Status(options) => client::status(options, out).await,
        ClientCommand::History(options) => client::history(options, out).await,
        ClientCommand::Graph(options) => client::graph(options, out).await,
        ClientCommand::Cancel(options) => {
            let force: &[_] = if options.force {
                &[("force", "true")]
            } else {
                &[]
            };
            client::control(options.workflow, "cancel", force, out).await
        }
        ClientCommand::Pause(options) => client::control(options, "pause", &[], out).await,
        ClientCommand::Resume(options) => client::control(options, "resume", &[], out).await,
        ClientCommand::Retry(options) => client::control(options, "retry", &[], out).await,
        ClientCommand::Agents(options) => client::agents(options, out).await,
        ClientCommand::Stats(options) => client::stats(options, out).await,
        ClientCommand::Chat(options) => chat(options).await,
        ClientCommand::Completions { shell } => Ok(completions(shell, app(), out)?),
    };
    // A reader that stopped early (`| head`) took all it wanted: not an error.
    match result {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        result => result,
    }
}

/// Writes `shell`'s completion script for the command line `app`, under its name.
pub fn completions(
    shell: clap_complete::Shell,
    mut app: clap::Command,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let name = app.get_name().to_string();
    // Whole first: clap_complete panics on a failed write, and a reader may stop early.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut app, name, &mut script);
    out.write_all(&script)?;
    out.flush()
}
