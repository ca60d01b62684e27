//! Workflow DAGs: validation of submitted task lists (ids, dependencies, cycles) and the
//! analyses the scheduler needs (stages, topological order, descendants, critical path).
//! Pure logic, no I/O.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::retry::RetryPolicyInput;

/// One task as submitted by a user (the JSON body of POST /v1/workflows has `tasks: [TaskSpec]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)
    )]
    pub id: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length = 64)
    )]
    pub capability: String,
    #[serde(default)]
    pub input: serde_json::Value,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The task's retry policy, over the workflow's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicyInput>,
    /// False: a retry stays on the agent that failed instead of moving to a fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<bool>,
    /// The longest the agent call may take, in seconds (the agent's own time-out may be less).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 900))]
    pub timeout_s: Option<i64>,
    /// The task type it is learned and prioritised under (default: its capability).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length = 64)
    )]
    pub task_type: Option<String>,
    /// `learned`, `round_robin`, `random`, `weighted` or `least_loaded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::routing::RoutingStrategy>))]
    pub routing: Option<String>,
    /// `critical`, `high`, `normal` or `low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::priority::Priority>))]
    pub priority: Option<String>,
    /// What one call of the task holds on its agent, by resource name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// The latest time it may start (RFC 3339), or `deadline_s` seconds from submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_s: Option<f64>,
    /// Past results to give the agent: `{"relevant": N}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<crate::results::MemoryAsk>,
    /// The shared context its agent receives and may update (overrides the workflow's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length = 64)
    )]
    pub context: Option<String>,
    /// Stream the agent's answer as it is produced: clients read it from
    /// `GET /v1/workflows/{id}/tasks/{task}/events` (model agents; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

impl TaskSpec {
    /// A task with only its shape: id, capability and dependencies.
    pub fn shape(id: &str, capability: &str, depends_on: Vec<String>) -> Self {
        TaskSpec {
            id: id.to_string(),
            capability: capability.to_string(),
            input: serde_json::Value::Null,
            depends_on,
            retry: None,
            fallback: None,
            timeout_s: None,
            task_type: None,
            routing: None,
            priority: None,
            resources: None,
            deadline: None,
            deadline_s: None,
            memory: None,
            context: None,
            stream: None,
        }
    }
}

/// Why a submitted task list is not a valid workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("a workflow needs at least one task")]
    Empty,
    #[error("a workflow may have at most {max} tasks, this one has {count}")]
    TooManyTasks { count: usize, max: usize },
    #[error("task id `{id}` is used more than once")]
    DuplicateId { id: String },
    #[error("task `{task}` depends on unknown task `{dependency}`")]
    UnknownDependency { task: String, dependency: String },
    #[error("task `{task}` lists dependency `{dependency}` more than once")]
    DuplicateDependency { task: String, dependency: String },
    /// `path` repeats its first node at the end, e.g. `["a","b","c","a"]`; each task is a
    /// dependency of the next one. A self-dependency is `["a","a"]`.
    #[error("the tasks form a cycle: {}", path.join(" -> "))]
    Cycle { path: Vec<String> },
}

/// Upper bound on tasks per workflow, keeping workflow state within one storage item.
pub const MAX_TASKS: usize = 500;

/// A validated DAG. Indices are positions in the submitted task list.
#[derive(Debug, Clone)]
pub struct Dag {
    ids: Vec<String>,
    index: HashMap<String, usize>,
    /// Per task, the indices of its dependencies, in the order they were listed.
    dependencies: Vec<Vec<usize>>,
    /// Per task, the indices of the tasks that depend on it, in input order.
    dependents: Vec<Vec<usize>>,
    /// Stages computed once at build time; each stage holds indices in input order.
    stages: Vec<Vec<usize>>,
}

/// What the scheduler reports for a workflow before running it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    pub stages: Vec<Vec<String>>,
    /// The longest chain by estimated duration (by task count when nothing is known).
    pub critical_path: Vec<String>,
    /// Tasks per stage: how many run side by side on average.
    pub parallelism: f64,
    /// The critical path's estimated duration.
    pub estimated_duration_ms: u64,
    /// Per task, in submission order: its estimate and where it comes from.
    pub estimates: Vec<TaskEstimate>,
}

/// One task's estimated duration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskEstimate {
    pub task: String,
    pub duration_ms: u64,
    /// `learned p50 of <agent>` or `default`.
    pub source: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    OnPath,
    Done,
}

impl Dag {
    /// Validates in this order: Empty, TooManyTasks, DuplicateId (first duplicate in input order),
    /// UnknownDependency / DuplicateDependency (first offending task in input order, its deps in
    /// listed order), then Cycle.
    pub fn build(tasks: &[TaskSpec]) -> Result<Dag, DagError> {
        if tasks.is_empty() {
            return Err(DagError::Empty);
        }
        if tasks.len() > MAX_TASKS {
            return Err(DagError::TooManyTasks {
                count: tasks.len(),
                max: MAX_TASKS,
            });
        }

        let mut index = HashMap::with_capacity(tasks.len());
        for (i, task) in tasks.iter().enumerate() {
            if index.insert(task.id.clone(), i).is_some() {
                return Err(DagError::DuplicateId {
                    id: task.id.clone(),
                });
            }
        }

        let n = tasks.len();
        let mut dependencies = Vec::with_capacity(n);
        let mut dependents = vec![Vec::new(); n];
        // Reused across tasks to spot repeated dependencies in O(deg) without a per-task set:
        // `seen_by[d] == i` means task i already listed d.
        let mut seen_by = vec![usize::MAX; n];
        for (i, task) in tasks.iter().enumerate() {
            let mut deps = Vec::with_capacity(task.depends_on.len());
            for dep in &task.depends_on {
                let Some(&d) = index.get(dep) else {
                    return Err(DagError::UnknownDependency {
                        task: task.id.clone(),
                        dependency: dep.clone(),
                    });
                };
                if seen_by[d] == i {
                    return Err(DagError::DuplicateDependency {
                        task: task.id.clone(),
                        dependency: dep.clone(),
                    });
                }
                seen_by[d] = i;
                deps.push(d);
                // Tasks are visited in input order, so every dependents list ends up in input order.
                dependents[d].push(i);
            }
            dependencies.push(deps);
        }

        let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let stages = match levels(&dependencies, &dependents) {
            Some(stages) => stages,
            None => {
                return Err(DagError::Cycle {
                    path: find_cycle(&ids, &dependents),
                })
            }
        };

        Ok(Dag {
            ids,
            index,
            dependencies,
            dependents,
            stages,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false for a built DAG (empty workflows are rejected); kept for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Task ids in input order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Dependencies of `id` as listed; empty for an unknown id.
    pub fn dependencies_of(&self, id: &str) -> Vec<&str> {
        self.index
            .get(id)
            .map(|&i| self.names(&self.dependencies[i]))
            .unwrap_or_default()
    }

    /// Tasks that list `id` in `depends_on`, in input order; empty for an unknown id.
    pub fn dependents_of(&self, id: &str) -> Vec<&str> {
        self.index
            .get(id)
            .map(|&i| self.names(&self.dependents[i]))
            .unwrap_or_default()
    }

    /// Tasks with no dependencies, in input order.
    pub fn roots(&self) -> Vec<&str> {
        (0..self.len())
            .filter(|&i| self.dependencies[i].is_empty())
            .map(|i| self.ids[i].as_str())
            .collect()
    }

    /// Kahn-style levels: stage 0 = roots; a task's stage = 1 + max stage of its dependencies.
    /// Each stage is in input order.
    pub fn stages(&self) -> Vec<Vec<&str>> {
        self.stages.iter().map(|stage| self.names(stage)).collect()
    }

    /// A full topological order (stages flattened).
    pub fn topological_order(&self) -> Vec<&str> {
        self.stages
            .iter()
            .flatten()
            .map(|&i| self.ids[i].as_str())
            .collect()
    }

    /// Every task that transitively depends on `id` (not including `id`), in topological order.
    /// Empty for an unknown id.
    pub fn descendants_of(&self, id: &str) -> Vec<&str> {
        let Some(&start) = self.index.get(id) else {
            return Vec::new();
        };
        let mut reached = vec![false; self.len()];
        let mut pending = vec![start];
        while let Some(node) = pending.pop() {
            for &next in &self.dependents[node] {
                if !reached[next] {
                    reached[next] = true;
                    pending.push(next);
                }
            }
        }
        // Walking the stored stages yields the marked set already in topological order.
        self.stages
            .iter()
            .flatten()
            .filter(|&&i| reached[i])
            .map(|&i| self.ids[i].as_str())
            .collect()
    }

    /// Longest path by summed duration, given each task's estimated duration in ms (the
    /// closure is called once per task, with its id). Returns the path of ids from a root to a
    /// sink and its total. Ties are broken by input order (earliest task wins), both when
    /// choosing the sink and when choosing the predecessor of each step. With `|_| 1.0` it is
    /// the longest chain.
    pub fn critical_path(&self, duration_ms: impl Fn(&str) -> f64) -> (Vec<&str>, f64) {
        let n = self.len();
        let mut best = vec![0.0_f64; n];
        let mut previous: Vec<Option<usize>> = vec![None; n];
        // Stages order guarantees every dependency is final before its dependents are scored.
        for &i in self.stages.iter().flatten() {
            let mut chosen: Option<usize> = None;
            for &d in &self.dependencies[i] {
                chosen = match chosen {
                    Some(c) if best[c] > best[d] || (best[c] == best[d] && c < d) => Some(c),
                    _ => Some(d),
                };
            }
            previous[i] = chosen;
            best[i] = duration_ms(&self.ids[i]) + chosen.map_or(0.0, |c| best[c]);
        }

        // Only sinks may end the path, so that it runs root-to-sink even when some durations
        // are zero or negative.
        let mut end: Option<usize> = None;
        for i in (0..n).filter(|&i| self.dependents[i].is_empty()) {
            if end.is_none_or(|e| best[i] > best[e]) {
                end = Some(i);
            }
        }
        // A non-empty acyclic graph always has a sink.
        let Some(end) = end else {
            return (Vec::new(), 0.0);
        };

        let mut path = vec![self.ids[end].as_str()];
        let mut node = end;
        while let Some(p) = previous[node] {
            path.push(self.ids[p].as_str());
            node = p;
        }
        path.reverse();
        (path, best[end])
    }

    /// Tasks per stage (average width), e.g. the diamond a->{b,c}->d gives 4/3.
    pub fn parallelism(&self) -> f64 {
        if self.stages.is_empty() {
            return 0.0;
        }
        self.len() as f64 / self.stages.len() as f64
    }

    /// The plan: stages, the critical path weighted by each task's estimate (from
    /// `estimate`, called once per task with its id), its duration, and parallelism.
    pub fn plan(&self, estimate: impl Fn(&str) -> TaskEstimate) -> Plan {
        let estimates: Vec<TaskEstimate> = self.ids.iter().map(|id| estimate(id)).collect();
        let duration_of = |id: &str| {
            self.index
                .get(id)
                .map_or(0.0, |&i| estimates[i].duration_ms as f64)
        };
        // Equal estimates everywhere (nothing learned yet) still give the longest chain.
        let (path, total) = self.critical_path(duration_of);
        Plan {
            stages: self
                .stages()
                .into_iter()
                .map(|stage| stage.into_iter().map(str::to_owned).collect())
                .collect(),
            critical_path: path.into_iter().map(str::to_owned).collect(),
            parallelism: self.parallelism(),
            estimated_duration_ms: total.round() as u64,
            estimates,
        }
    }

    fn names(&self, indices: &[usize]) -> Vec<&str> {
        indices.iter().map(|&i| self.ids[i].as_str()).collect()
    }
}

/// Kahn's algorithm, assigning each task its level. Returns `None` when some tasks can never
/// become ready, i.e. the graph has a cycle. O(V+E).
fn levels(dependencies: &[Vec<usize>], dependents: &[Vec<usize>]) -> Option<Vec<Vec<usize>>> {
    let n = dependencies.len();
    let mut waiting: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut level = vec![0_usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut processed = 0;
    let mut depth = 0;
    while let Some(node) = ready.pop() {
        processed += 1;
        depth = depth.max(level[node] + 1);
        for &next in &dependents[node] {
            level[next] = level[next].max(level[node] + 1);
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(next);
            }
        }
    }
    if processed < n {
        return None;
    }
    // Bucketing in index order keeps each stage in input order.
    let mut stages = vec![Vec::new(); depth];
    for (i, &l) in level.iter().enumerate() {
        stages[l].push(i);
    }
    Some(stages)
}

/// Finds a cycle known to exist. Direction: edges go from a task to its dependents, so the
/// returned path reads "each task is needed by the next". DFS roots are tried in input order
/// and children in input order, so the result is deterministic; the path starts at the node
/// where the first back edge lands and repeats it at the end. Iterative, because a recursive
/// DFS over a long chain would overflow the stack.
fn find_cycle(ids: &[String], dependents: &[Vec<usize>]) -> Vec<String> {
    let n = ids.len();
    let mut visit = vec![Visit::New; n];
    // Each frame is (node, index of the next dependent to explore).
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..n {
        if visit[start] != Visit::New {
            continue;
        }
        visit[start] = Visit::OnPath;
        stack.push((start, 0));
        while let Some(top) = stack.last_mut() {
            let node = top.0;
            let Some(&child) = dependents[node].get(top.1) else {
                visit[node] = Visit::Done;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match visit[child] {
                Visit::New => {
                    visit[child] = Visit::OnPath;
                    stack.push((child, 0));
                }
                Visit::OnPath => {
                    // The stack is exactly the current path, so the cycle is its tail.
                    let from = stack
                        .iter()
                        .position(|&(n, _)| n == child)
                        .expect("a node on the path is on the stack");
                    let mut path: Vec<String> =
                        stack[from..].iter().map(|&(n, _)| ids[n].clone()).collect();
                    path.push(ids[child].clone());
                    return path;
                }
                Visit::Done => {}
            }
        }
    }
    // Only called after Kahn's algorithm left tasks unprocessed, which implies a cycle.
    unreachable!("find_cycle called on an acyclic graph")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec::shape(id, "test", deps.iter().map(|d| (*d).to_owned()).collect())
    }

    fn diamond() -> Vec<TaskSpec> {
        vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["a"]),
            task("d", &["b", "c"]),
        ]
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn empty_workflow_is_rejected() {
        assert_eq!(Dag::build(&[]).unwrap_err(), DagError::Empty);
    }

    #[test]
    fn too_many_tasks_is_rejected() {
        let tasks: Vec<TaskSpec> = (0..=MAX_TASKS)
            .map(|i| task(&format!("t{i}"), &[]))
            .collect();
        assert_eq!(
            Dag::build(&tasks).unwrap_err(),
            DagError::TooManyTasks {
                count: MAX_TASKS + 1,
                max: MAX_TASKS
            }
        );
    }

    #[test]
    fn exactly_max_tasks_is_accepted() {
        let tasks: Vec<TaskSpec> = (0..MAX_TASKS)
            .map(|i| task(&format!("t{i}"), &[]))
            .collect();
        let dag = Dag::build(&tasks).unwrap();
        assert_eq!(dag.len(), MAX_TASKS);
        assert_eq!(dag.stages().len(), 1);
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let tasks = vec![
            task("a", &[]),
            task("b", &[]),
            task("b", &[]),
            task("a", &[]),
        ];
        assert_eq!(
            Dag::build(&tasks).unwrap_err(),
            DagError::DuplicateId { id: "b".into() }
        );
    }

    #[test]
    fn unknown_dependency_is_rejected() {
        let tasks = vec![task("a", &[]), task("b", &["a", "zz", "yy"])];
        assert_eq!(
            Dag::build(&tasks).unwrap_err(),
            DagError::UnknownDependency {
                task: "b".into(),
                dependency: "zz".into()
            }
        );
    }

    #[test]
    fn duplicate_dependency_is_rejected() {
        let tasks = vec![task("a", &[]), task("b", &[]), task("c", &["a", "b", "a"])];
        assert_eq!(
            Dag::build(&tasks).unwrap_err(),
            DagError::DuplicateDependency {
                task: "c".into(),
                dependency: "a".into()
            }
        );
    }

    #[test]
    fn dependency_errors_report_the_first_offending_task() {
        let tasks = vec![
            task("a", &[]),
            task("b", &["a", "a"]),
            task("c", &["missing"]),
        ];
        assert_eq!(
            Dag::build(&tasks).unwrap_err(),
            DagError::DuplicateDependency {
                task: "b".into(),
                dependency: "a".into()
            }
        );
    }

    #[test]
    fn reference_errors_take_precedence_over_cycles() {
        let tasks = vec![task("a", &["b"]), task("b", &["a"]), task("c", &["nope"])];
        assert!(matches!(
            Dag::build(&tasks).unwrap_err(),
            DagError::UnknownDependency { .. }
        ));
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let tasks = vec![task("x", &[]), task("a", &["a"])];
        assert_eq!(
            Dag::build(&tasks).unwrap_err(),
            DagError::Cycle {
                path: strings(&["a", "a"])
            }
        );
    }

    #[test]
    fn cycle_is_reported_with_its_path() {
        let tasks = vec![task("a", &["c"]), task("b", &["a"]), task("c", &["b"])];
        let err = Dag::build(&tasks).unwrap_err();
        assert_eq!(
            err,
            DagError::Cycle {
                path: strings(&["a", "b", "c", "a"])
            }
        );
        assert_eq!(err.to_string(), "the tasks form a cycle: a -> b -> c -> a");
    }

    #[test]
    fn cycle_behind_a_valid_prefix_is_found() {
        let tasks = vec![
            task("x", &[]),
            task("p", &["x", "q"]),
            task("q", &["p"]),
            task("y", &["q"]),
        ];
        assert_eq!(
            Dag::build(&tasks).unwrap_err(),
            DagError::Cycle {
                path: strings(&["p", "q", "p"])
            }
        );
    }

    #[test]
    fn diamond_has_three_stages() {
        let dag = Dag::build(&diamond()).unwrap();
        assert_eq!(dag.stages(), vec![vec!["a"], vec!["b", "c"], vec!["d"]]);
        assert_eq!(dag.roots(), vec!["a"]);
        assert_eq!(dag.dependencies_of("d"), vec!["b", "c"]);
        assert_eq!(dag.dependents_of("a"), vec!["b", "c"]);
        assert!(dag.dependencies_of("nope").is_empty());
        assert!(dag.dependents_of("nope").is_empty());
    }

    #[test]
    fn stage_is_one_more_than_the_deepest_dependency() {
        // e depends on a root and on a stage-2 task, so it lands in stage 3.
        let tasks = vec![
            task("e", &["a", "c"]),
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["b"]),
        ];
        let dag = Dag::build(&tasks).unwrap();
        assert_eq!(
            dag.stages(),
            vec![vec!["a"], vec!["b"], vec!["c"], vec!["e"]]
        );
        assert_eq!(dag.ids(), &strings(&["e", "a", "b", "c"])[..]);
    }

    #[test]
    fn topological_order_respects_every_edge() {
        let tasks = vec![
            task("deploy", &["test", "package"]),
            task("fetch", &[]),
            task("lint", &["fetch"]),
            task("compile", &["fetch", "codegen"]),
            task("codegen", &["fetch"]),
            task("test", &["compile", "lint"]),
            task("docs", &["codegen"]),
            task("package", &["compile", "docs"]),
            task("notify", &["deploy"]),
            task("audit", &[]),
        ];
        let dag = Dag::build(&tasks).unwrap();
        let order = dag.topological_order();
        assert_eq!(order.len(), tasks.len());
        let position = |id: &str| order.iter().position(|o| *o == id).unwrap();
        for t in &tasks {
            for dep in &t.depends_on {
                assert!(
                    position(dep) < position(&t.id),
                    "{dep} must come before {}",
                    t.id
                );
            }
        }
    }

    #[test]
    fn descendants_are_transitive() {
        let tasks = vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["b"]),
            task("d", &["c", "x"]),
            task("x", &[]),
            task("e", &["a"]),
        ];
        let dag = Dag::build(&tasks).unwrap();
        assert_eq!(dag.descendants_of("a"), vec!["b", "e", "c", "d"]);
        assert_eq!(dag.descendants_of("x"), vec!["d"]);
        assert!(dag.descendants_of("d").is_empty());
        assert!(dag.descendants_of("nope").is_empty());
    }

    #[test]
    fn critical_path_follows_the_longest_durations() {
        let dag = Dag::build(&diamond()).unwrap();
        let (path, total) = dag.critical_path(|id| match id {
            "b" => 10.0,
            "c" => 50.0,
            _ => 1.0,
        });
        assert_eq!(path, vec!["a", "c", "d"]);
        assert_eq!(total, 52.0);
    }

    #[test]
    fn critical_path_ties_go_to_the_earliest_task() {
        let dag = Dag::build(&diamond()).unwrap();
        assert_eq!(dag.critical_path(|_| 1.0), (vec!["a", "b", "d"], 3.0));

        let tasks = vec![task("p", &[]), task("q", &[])];
        let dag = Dag::build(&tasks).unwrap();
        assert_eq!(dag.critical_path(|_| 2.0), (vec!["p"], 2.0));
    }

    #[test]
    fn critical_path_ends_at_a_sink() {
        let tasks = vec![task("a", &[]), task("b", &["a"])];
        let dag = Dag::build(&tasks).unwrap();
        let (path, total) = dag.critical_path(|id| if id == "a" { 5.0 } else { -1.0 });
        assert_eq!(path, vec!["a", "b"]);
        assert_eq!(total, 4.0);
    }

    #[test]
    fn parallelism_is_tasks_per_stage() {
        let dag = Dag::build(&diamond()).unwrap();
        assert!((dag.parallelism() - 4.0 / 3.0).abs() < 1e-12);

        let flat = Dag::build(&[task("a", &[]), task("b", &[])]).unwrap();
        assert_eq!(flat.parallelism(), 2.0);
    }

    #[test]
    fn plan_combines_stages_critical_path_and_parallelism() {
        let plan = Dag::build(&diamond()).unwrap().plan(|id| TaskEstimate {
            task: id.to_string(),
            duration_ms: if id == "c" { 300 } else { 100 },
            source: "default".into(),
        });
        assert_eq!(
            plan.stages,
            vec![strings(&["a"]), strings(&["b", "c"]), strings(&["d"])]
        );
        // c is slower than b: the critical path goes through it.
        assert_eq!(plan.critical_path, strings(&["a", "c", "d"]));
        assert_eq!(plan.estimated_duration_ms, 500);
        assert_eq!(plan.parallelism, 4.0 / 3.0);
        assert_eq!(plan.estimates.len(), 4);
        let value = serde_json::to_value(&plan).unwrap();
        assert_eq!(value["critical_path"], json!(["a", "c", "d"]));
    }

    #[test]
    fn deep_chain_does_not_overflow_the_stack() {
        let tasks: Vec<TaskSpec> = (0..MAX_TASKS)
            .map(|i| {
                if i == 0 {
                    task("t0", &[])
                } else {
                    task(&format!("t{i}"), &[&format!("t{}", i - 1)])
                }
            })
            .collect();
        let dag = Dag::build(&tasks).unwrap();
        assert_eq!(dag.stages().len(), MAX_TASKS);
        assert_eq!(dag.critical_path(|_| 1.0).0.len(), MAX_TASKS);
        assert_eq!(dag.descendants_of("t0").len(), MAX_TASKS - 1);
    }

    #[test]
    fn deep_cycle_does_not_overflow_the_stack() {
        let n = MAX_TASKS;
        let tasks: Vec<TaskSpec> = (0..n)
            .map(|i| task(&format!("t{i}"), &[&format!("t{}", (i + n - 1) % n)]))
            .collect();
        match Dag::build(&tasks).unwrap_err() {
            DagError::Cycle { path } => {
                assert_eq!(path.len(), n + 1);
                assert_eq!(path.first().map(String::as_str), Some("t0"));
                assert_eq!(path.last().map(String::as_str), Some("t0"));
                assert_eq!(path[1], "t1");
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
    }

    #[test]
    fn spec_rejects_unknown_fields() {
        let body = r#"{"id":"a","capability":"summarize","priority":3}"#;
        assert!(serde_json::from_str::<TaskSpec>(body).is_err());
    }

    #[test]
    fn spec_defaults_input_and_dependencies() {
        let spec: TaskSpec =
            serde_json::from_str(r#"{"id":"a","capability":"summarize"}"#).unwrap();
        assert_eq!(spec.input, serde_json::Value::Null);
        assert!(spec.depends_on.is_empty());

        let spec: TaskSpec = serde_json::from_value(
            json!({"id":"b","capability":"c","input":{"k":1},"depends_on":["a"]}),
        )
        .unwrap();
        assert_eq!(spec.input, json!({"k": 1}));
        assert_eq!(spec.depends_on, vec!["a".to_owned()]);
    }
}
