//! The `baton-local` command line: its help and parsing, and the client commands against a
//! local stack, called as the binary calls them, with stdout and stderr captured.

use std::path::PathBuf;
use std::time::Duration;

use baton_cli::client;
use baton_cli::progress::ProgressView;
use baton_cli::{
    ApiTarget, ClientCommand, ClientOptions, GraphFormat, GraphOptions, SubmitOptions,
    WorkflowOptions, WorkflowsOptions,
};
use baton_local::agents::AgentReply;
use baton_local::cli::{Cli, Command};
use baton_local::project_root;
use baton_local::stack::LocalStack;
use baton_tests::*;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use serde_json::{json, Value};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("baton-local").chain(args.iter().copied()))
}

#[test]
fn help_and_version_are_shown_not_refused() {
    for args in [&["--help"][..], &["-h"], &["help"], &["help", "submit"]] {
        let error = parse(args).expect_err("help ends the parse");
        assert_eq!(error.kind(), ErrorKind::DisplayHelp, "{args:?}");
        assert_eq!(error.exit_code(), 0, "{args:?}");
        assert!(error.to_string().contains("Usage: baton-local"), "{args:?}");
    }
    let version = parse(&["--version"]).expect_err("version ends the parse");
    assert_eq!(version.kind(), ErrorKind::DisplayVersion);
    assert_eq!(version.exit_code(), 0);
}

#[test]
fn every_command_has_help() {
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for expected in [
        "run",
        "submit",
        "workflows",
        "status",
        "history",
        "graph",
        "cancel",
        "pause",
        "resume",
        "retry",
        "agents",
        "stats",
        "chat",
        "completions",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    for name in &names {
        let error = parse(&[name, "--help"]).expect_err("help ends the parse");
        assert_eq!(error.kind(), ErrorKind::DisplayHelp, "{name} --help");
        assert_eq!(error.exit_code(), 0, "{name} --help");
    }
}

#[test]
fn bad_arguments_are_usage_errors_with_exit_code_2() {
    for args in [
        &["--bogus"][..],
        &["status"],
        &["graph", "w1", "--format", "png"],
        &["workflows", "--limit", "many"],
        &["--port", "1", "agents"],
    ] {
        let error = parse(args).expect_err("refused");
        assert_eq!(error.exit_code(), 2, "{args:?}: {error}");
        assert!(error.use_stderr(), "{args:?}");
    }
}

#[test]
fn without_a_command_the_stack_runs_with_the_options_given() {
    let Command::Run(options) = parse(&["--port", "8089", "--no-examples"])
        .expect("parses")
        .into_command()
    else {
        panic!("no command means run");
    };
    assert_eq!(options.port, 8089);
    assert!(options.no_examples);
    assert!(matches!(
        parse(&[]).expect("parses").into_command(),
        Command::Run(_)
    ));
}

#[test]
fn completions_cover_the_commands() {
    let Command::Client(ClientCommand::Completions { shell }) = parse(&["completions", "bash"])
        .expect("parses")
        .into_command()
    else {
        panic!("completions parses as completions");
    };
    let mut script = Vec::new();
    baton_cli::completions(shell, Cli::command(), &mut script).expect("written");
    let script = String::from_utf8(script).expect("utf-8");
    for command in ["submit", "workflows", "history", "completions", "--json"] {
        assert!(script.contains(command), "{command} in the bash script");
    }
}

/// The client options of a command aimed at `stack`.
fn aimed_at(stack: &LocalStack, json: bool) -> ClientOptions {
    ClientOptions {
        target: ApiTarget {
            api: stack.api_url.clone(),
            token: None,
            tenant: None,
        },
        json,
    }
}

/// A stack with the example agents registered, as `baton-local run` registers them.
async fn stack_with_examples(name: &str) -> (LocalStack, Vec<baton_local::agents::AgentServer>) {
    let stack = start_stack(name, |_| {}).await;
    let mut servers = Vec::new();
    for (name, capability, behaviour) in examples::all() {
        let server = agent(behaviour).await;
        register_agent(&stack, name, &server, &[capability]).await;
        servers.push(server);
    }
    (stack, servers)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submit_follows_the_example_workflow_with_progress_lines_to_its_result() {
    let (stack, _agents) = stack_with_examples("cli-submit").await;
    let (mut out, mut progress) = (Vec::new(), Vec::new());
    let options = SubmitOptions {
        file: project_root().join("examples/diamond.json"),
        timeout: None,
        follow: false,
        client: aimed_at(&stack, false),
    };
    let workflow = client::submit(options, &mut out, ProgressView::lines(&mut progress))
        .await
        .expect("the workflow succeeds");
    assert_eq!(workflow["status"], "succeeded", "{workflow:#}");

    // One line per change, ended tasks never going back, the last one the end.
    let progress = text(progress);
    let lines: Vec<&str> = progress.lines().collect();
    assert!(!lines.is_empty(), "progress was shown");
    let ended: Vec<usize> = lines
        .iter()
        .map(|line| {
            let (count, _) = line.split_once("/4 tasks ended").expect(line);
            count.parse().expect(line)
        })
        .collect();
    assert!(ended.windows(2).all(|w| w[0] <= w[1]), "{progress}");
    assert_eq!(lines.last(), Some(&"4/4 tasks ended; workflow succeeded"));
    assert!(
        lines.windows(2).all(|w| w[0] != w[1]),
        "each line is a change: {progress}"
    );

    let id = workflow["workflow_id"].as_str().expect("id");
    let out = text(out);
    assert!(
        out.starts_with(&format!("submitted workflow {id}: 3 stages")),
        "{out}"
    );
    assert!(out.contains("status    succeeded\n"), "{out}");
    assert!(out.contains("tasks     4/4 ended\n"), "{out}");
    for (task, agent) in [
        ("clean", "normalizer"),
        ("stats", "counter"),
        ("shout", "shouter"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(task) && l.contains(&format!("succeeded  {agent}"))),
            "{task} on {agent} in {out}"
        );
    }
    assert!(
        out.contains("BATON ROUTES TASKS TO AGENTS."),
        "the outputs show: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submit_follow_shows_each_tasks_events_as_the_stream_pushes_them() {
    let (stack, _agents) = stack_with_examples("cli-follow").await;
    let (mut out, mut progress) = (Vec::new(), Vec::new());
    let options = SubmitOptions {
        file: project_root().join("examples/diamond.json"),
        timeout: None,
        follow: true,
        client: aimed_at(&stack, false),
    };
    let workflow = client::submit(options, &mut out, ProgressView::lines(&mut progress))
        .await
        .expect("the workflow succeeds");
    let out = text(out);
    let events: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .collect();
    // Each of the four tasks: ready, started, ended, once each and in that order.
    for task in ["clean", "stats", "shout", "report"] {
        let mine: Vec<&str> = events
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some(task))
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(mine, ["ready", "started", "ended"], "{task}: {out}");
    }
    let clean_ended = events
        .iter()
        .position(|l| l.starts_with("  ended    clean"))
        .unwrap();
    let stats_ready = events
        .iter()
        .position(|l| l.starts_with("  ready    stats"))
        .unwrap();
    assert!(
        clean_ended < stats_ready,
        "a dependent is ready after its dependency: {out}"
    );
    assert!(out.contains("\nworkflow succeeded\n"), "{out}");
    assert_eq!(workflow["status"], "succeeded");
    assert!(
        out.contains("status    succeeded\n"),
        "the summary follows: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submit_with_json_prints_the_submission_and_the_finished_workflow() {
    let (stack, _agents) = stack_with_examples("cli-submit-json").await;
    let (mut out, mut progress) = (Vec::new(), Vec::new());
    let options = SubmitOptions {
        file: project_root().join("examples/diamond.json"),
        timeout: None,
        follow: false,
        client: aimed_at(&stack, true),
    };
    let workflow = client::submit(options, &mut out, ProgressView::lines(&mut progress))
        .await
        .expect("the workflow succeeds");
    let documents: Vec<Value> = serde_json::Deserializer::from_slice(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("stdout is JSON documents");
    assert_eq!(documents.len(), 2, "{}", text(out.clone()));
    assert_eq!(documents[0]["workflow_id"], workflow["workflow_id"]);
    assert!(documents[0]["plan"]["stages"].is_array());
    assert_eq!(documents[1], workflow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_that_fails_makes_submit_fail_after_showing_why() {
    let stack = start_stack("cli-fails", |_| {}).await;
    let file = temp_workflow(
        "orphan",
        &json!({ "name": "orphan", "tasks": [{ "id": "t", "capability": "translate.klingon" }] }),
    );
    let (mut out, mut progress) = (Vec::new(), Vec::new());
    let options = SubmitOptions {
        file: file.clone(),
        timeout: None,
        follow: false,
        client: aimed_at(&stack, false),
    };
    let error = client::submit(options, &mut out, ProgressView::lines(&mut progress))
        .await
        .expect_err("a failed workflow is an error");
    let _ = std::fs::remove_file(file);
    assert!(error.to_string().ends_with(" ended failed"), "{error}");
    let out = text(out);
    assert!(out.contains("status    failed (task t failed)"), "{out}");
    assert!(
        out.contains("no_capable_agent: no enabled agent offers capability `translate.klingon`"),
        "{out}"
    );
    assert!(text(progress).ends_with("1/1 tasks ended; workflow failed\n"));
}

/// A workflow file of its own for this test process.
fn temp_workflow(name: &str, workflow: &Value) -> PathBuf {
    let path = std::env::temp_dir().join(format!("baton-cli-{}-{name}.json", std::process::id()));
    std::fs::write(&path, workflow.to_string()).expect("written");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_each_task_and_agents_lists_the_examples() {
    let (stack, _agents) = stack_with_examples("cli-status").await;
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(project_root().join("examples/diamond.json")).expect("example"),
    )
    .expect("JSON");
    let id = submit(&stack, &example).await;
    let finished = wait_until_finished(&stack, &id).await;

    let mut out = Vec::new();
    let workflow = |json| WorkflowOptions {
        id: id.clone(),
        client: aimed_at(&stack, json),
    };
    client::status(workflow(false), &mut out)
        .await
        .expect("status");
    let out = text(out);
    assert!(
        out.starts_with(&format!(
            "workflow  {id} (text-report)\nstatus    succeeded\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("\nTASK    STATUS     AGENT       ATTEMPT  OUTPUT OR ERROR\n"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("report  succeeded  reporter    1")),
        "{out}"
    );

    let mut json = Vec::new();
    client::status(workflow(true), &mut json)
        .await
        .expect("status --json");
    let json: Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(json["tasks"], finished["tasks"]);

    let mut agents = Vec::new();
    client::agents(aimed_at(&stack, false), &mut agents)
        .await
        .expect("agents");
    let agents = text(agents);
    assert!(
        agents.starts_with("NAME        KIND  CAPABILITIES    ENABLED  HEALTH"),
        "{agents}"
    );
    for (name, capability) in [
        ("normalizer", "text.normalize"),
        ("counter", "text.stats"),
        ("shouter", "text.transform"),
        ("reporter", "report.compose"),
    ] {
        assert!(
            agents.lines().any(|l| l.starts_with(name)
                && l.contains(&format!("http  {capability}"))
                && l.contains("yes")
                && l.ends_with("closed")),
            "{name} in {agents}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_error_reads_as_its_message_code_and_status() {
    let stack = start_stack("cli-errors", |_| {}).await;
    let options = WorkflowOptions {
        id: "no-such-workflow".into(),
        client: aimed_at(&stack, false),
    };
    let mut out = Vec::new();
    let error = client::status(options, &mut out)
        .await
        .expect_err("an unknown workflow");
    let message = error.to_string();
    assert!(message.ends_with("(not_found, HTTP 404)"), "{message}");
    assert!(out.is_empty(), "nothing printed on stdout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflows_history_and_graph_show_a_finished_workflow() {
    let (stack, _agents) = stack_with_examples("cli-views").await;
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(project_root().join("examples/diamond.json")).expect("example"),
    )
    .expect("JSON");
    let id = submit(&stack, &example).await;
    wait_until_finished(&stack, &id).await;
    let workflow = |json| WorkflowOptions {
        id: id.clone(),
        client: aimed_at(&stack, json),
    };

    let mut list = Vec::new();
    let options = WorkflowsOptions {
        status: Some("succeeded".into()),
        name: None,
        since: None,
        limit: Some(1),
        cursor: None,
        all: true,
        client: aimed_at(&stack, false),
    };
    client::workflows(options, &mut list)
        .await
        .expect("workflows");
    let list = text(list);
    assert!(list.starts_with("WORKFLOW  "), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("text-report  succeeded  4 ")),
        "{list}"
    );

    let mut history = Vec::new();
    client::history(workflow(false), &mut history)
        .await
        .expect("history");
    let history = text(history);
    let events: Vec<&str> = history.lines().skip(1).collect();
    assert!(events.len() >= 4, "an event per step: {history}");
    assert!(
        events
            .iter()
            .all(|e| e.len() > 24 && e[..24].ends_with('Z')),
        "each line starts with its time: {history}"
    );
    for task in ["clean", "stats", "shout", "report"] {
        assert!(
            events
                .iter()
                .any(|e| e.split_whitespace().nth(2) == Some(task)),
            "{task} in {history}"
        );
    }

    for (format, opening) in [
        (GraphFormat::Mermaid, "flowchart"),
        (GraphFormat::Dot, "digraph"),
    ] {
        let mut graph = Vec::new();
        let options = GraphOptions {
            workflow: workflow(false),
            format,
        };
        client::graph(options, &mut graph).await.expect("graph");
        let graph = text(graph);
        assert!(graph.starts_with(opening), "{graph}");
        assert!(
            graph.contains("clean") && graph.contains("report"),
            "{graph}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_resume_and_cancel_steer_a_workflow_that_submit_follows_to_its_end() {
    let stack = start_stack("cli-controls", |_| {}).await;
    // Long enough that only the forced cancel ends the workflow.
    let slow = agent_replying(AgentReply::ok(json!({})).after(Duration::from_secs(120))).await;
    register(
        &stack,
        json!({ "name": "slow", "endpoint": slow.url, "capabilities": ["wait"], "timeout_ms": 120000 }),
    )
    .await;
    let file = temp_workflow(
        "held",
        &json!({ "name": "held", "tasks": [
            { "id": "hold", "capability": "wait" },
            { "id": "after", "capability": "wait", "depends_on": ["hold"] }
        ]}),
    );
    let (mut out, mut progress) = (Vec::new(), Vec::new());
    let options = SubmitOptions {
        file: file.clone(),
        timeout: None,
        follow: false,
        client: aimed_at(&stack, false),
    };
    let following = client::submit(options, &mut out, ProgressView::lines(&mut progress));
    let steering = async {
        let id = eventually("the workflow is listed", || async {
            let page = get(&stack, "/v1/workflows?name=held").await.body;
            page["workflows"][0]["workflow_id"]
                .as_str()
                .map(str::to_string)
        })
        .await;
        eventually("hold is running", || async {
            let view = get(&stack, &format!("/v1/workflows/{id}")).await.body;
            (task(&view, "hold")["status"] == "running").then_some(())
        })
        .await;
        const PLAIN: &[(&str, &str)] = &[];
        const FORCE: &[(&str, &str)] = &[("force", "true")];
        let steps = [
            ("pause", PLAIN, "paused"),
            ("resume", PLAIN, "running"),
            ("cancel", FORCE, "cancelled"),
        ];
        for (action, query, status) in steps {
            let mut answer = Vec::new();
            let options = WorkflowOptions {
                id: id.clone(),
                client: aimed_at(&stack, false),
            };
            client::control(options, action, query, &mut answer)
                .await
                .expect(action);
            let answer = text(answer);
            assert!(
                answer.lines().any(|l| l == format!("status: {status}")),
                "{action}: {answer}"
            );
        }
        id
    };
    let (followed, id) = tokio::join!(following, steering);
    let _ = std::fs::remove_file(file);
    let error = followed.expect_err("a cancelled workflow is not a success");
    assert_eq!(error.to_string(), format!("workflow {id} ended cancelled"));
    let out = text(out);
    assert!(out.contains("status    cancelled\n"), "{out}");
    assert!(
        text(progress).ends_with("tasks ended; workflow cancelled\n"),
        "the last progress line is the end"
    );
}
