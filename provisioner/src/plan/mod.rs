//! The plan: a sealed petgraph DAG of (host, step) nodes.
//!
//! Edges encode only what meaning requires:
//! - each host runs its steps in order (facts, then tasks, then handler flush);
//! - `linear` strategy: a barrier after every task, so all hosts of a batch finish task N before
//!   any starts task N+1 (Ansible's default). `free` has no per-task barriers;
//! - `serial` batches run one after another, and each play starts after the previous one ends.
//!
//! A block (`block`/`rescue`/`always`) is one step: the host runs it as a unit.
//! The graph is built once, checked for cycles, and then only read (`Plan` has no mutators).

use std::collections::HashMap;
use std::fmt::Write as _;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::model::play::{Batch, Play, Strategy};

/// What a node does.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Gather `ansible_*` facts on the host.
    Facts { play: usize },
    /// Run top-level task `task` of play `play` (a block counts as one task).
    Task { play: usize, task: usize },
    /// Run the host's notified handlers (end of a batch).
    Handlers { play: usize },
    /// Wait until every predecessor is done. `label` says what it separates.
    Barrier { play: usize, label: String },
}

impl Step {
    /// The play this step belongs to.
    pub fn play(&self) -> usize {
        match self {
            Step::Facts { play }
            | Step::Task { play, .. }
            | Step::Handlers { play }
            | Step::Barrier { play, .. } => *play,
        }
    }
}

/// One node: a step on a host, or a barrier (no host).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    pub host: Option<String>,
    pub step: Step,
    /// The serial batch this node belongs to (0 when the play has no `serial`).
    pub batch: usize,
}

/// The hosts one play targets, in inventory order.
#[derive(Clone, Debug)]
pub struct PlayTarget<'a> {
    pub play: &'a Play,
    pub hosts: Vec<String>,
}

/// A sealed, acyclic execution plan.
#[derive(Debug)]
pub struct Plan {
    graph: DiGraph<Node, ()>,
    /// Per play: the host batches, in order.
    batches: Vec<Vec<Vec<String>>>,
}

/// Split `hosts` into `serial` batches as Ansible does: a percentage is of all the play's hosts
/// (rounded down, at least 1); the last size repeats until every host is placed.
pub fn batches(hosts: &[String], serial: &[Batch]) -> Vec<Vec<String>> {
    if serial.is_empty() || hosts.is_empty() {
        return vec![hosts.to_vec()];
    }
    let total = hosts.len();
    let size_of = |b: &Batch| match b {
        Batch::Count(n) => (*n).max(1),
        Batch::Percent(p) => ((total * *p as usize) / 100).max(1),
    };
    let mut out = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < total {
        let size = size_of(&serial[k.min(serial.len() - 1)]);
        let end = (i + size).min(total);
        out.push(hosts[i..end].to_vec());
        i = end;
        k += 1;
    }
    out
}

impl Plan {
    /// Build the plan for plays and their target hosts.
    pub fn build(targets: &[PlayTarget<'_>]) -> Plan {
        let mut g: DiGraph<Node, ()> = DiGraph::new();
        let mut all_batches = Vec::new();
        // The node every next step must follow (the previous play's end).
        let mut gate: Option<NodeIndex> = None;
        for (pi, t) in targets.iter().enumerate() {
            let play_batches = batches(&t.hosts, &t.play.serial);
            let ntasks = t.play.tasks.len();
            for (bi, batch) in play_batches.iter().enumerate() {
                if batch.is_empty() {
                    continue;
                }
                let mut last: HashMap<&str, NodeIndex> = HashMap::new();
                let add = |g: &mut DiGraph<Node, ()>, host: Option<&str>, step: Step| {
                    g.add_node(Node {
                        host: host.map(str::to_string),
                        step,
                        batch: bi,
                    })
                };
                // Facts, then tasks, then handlers: one chain per host.
                let mut columns: Vec<Step> = Vec::new();
                if t.play.gather_facts {
                    columns.push(Step::Facts { play: pi });
                }
                columns.extend((0..ntasks).map(|task| Step::Task { play: pi, task }));
                columns.push(Step::Handlers { play: pi });
                for (ci, step) in columns.iter().enumerate() {
                    let mut col = Vec::new();
                    for h in batch {
                        let n = add(&mut g, Some(h), step.clone());
                        match last.get(h.as_str()) {
                            Some(prev) => {
                                g.add_edge(*prev, n, ());
                            }
                            None => {
                                if let Some(gt) = gate {
                                    g.add_edge(gt, n, ());
                                }
                            }
                        }
                        last.insert(h, n);
                        col.push(n);
                    }
                    // Lockstep: a barrier after every column except the last.
                    let lockstep = t.play.strategy == Strategy::Linear && ci + 1 < columns.len();
                    if lockstep && batch.len() > 1 {
                        let b = add(
                            &mut g,
                            None,
                            Step::Barrier {
                                play: pi,
                                label: format!("after {}", column_label(step)),
                            },
                        );
                        for n in &col {
                            g.add_edge(*n, b, ());
                        }
                        for h in batch {
                            last.insert(h, b);
                        }
                    }
                }
                // The batch ends when all its hosts are done.
                let end = add(
                    &mut g,
                    None,
                    Step::Barrier {
                        play: pi,
                        label: format!("end of batch {}", bi + 1),
                    },
                );
                let mut ends: Vec<NodeIndex> = last.values().copied().collect();
                ends.sort_unstable();
                ends.dedup();
                for n in ends {
                    g.add_edge(n, end, ());
                }
                gate = Some(end);
            }
            all_batches.push(play_batches);
        }
        Plan {
            graph: g,
            batches: all_batches,
        }
    }

    pub fn graph(&self) -> &DiGraph<Node, ()> {
        &self.graph
    }

    pub fn node(&self, i: NodeIndex) -> &Node {
        &self.graph[i]
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// The host batches of each play.
    pub fn batches(&self) -> &[Vec<Vec<String>>] {
        &self.batches
    }

    /// Nodes that must finish before `i` starts.
    pub fn predecessors(&self, i: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(i, Direction::Incoming)
    }

    /// Nodes waiting on `i`.
    pub fn successors(&self, i: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(i, Direction::Outgoing)
    }

    /// The plan in Graphviz DOT, deterministic (node ids in creation order), for snapshots and
    /// `provisioner plan --dot`.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph plan {\n  rankdir=LR;\n");
        for i in self.graph.node_indices() {
            let n = &self.graph[i];
            let label = match &n.host {
                Some(h) => format!("{h}: {}", step_label(&n.step)),
                None => step_label(&n.step),
            };
            let shape = if n.host.is_none() { ",shape=box" } else { "" };
            let _ = writeln!(
                s,
                "  n{} [label=\"{}\"{shape}];",
                i.index(),
                label.replace('"', "\\\"")
            );
        }
        let mut edges: Vec<(usize, usize)> = self
            .graph
            .edge_indices()
            .filter_map(|e| self.graph.edge_endpoints(e))
            .map(|(a, b)| (a.index(), b.index()))
            .collect();
        edges.sort_unstable();
        for (a, b) in edges {
            let _ = writeln!(s, "  n{a} -> n{b};");
        }
        s.push_str("}\n");
        s
    }

    /// Checks the graph is acyclic. Always true for plans from `build`; kept as the seal's proof
    /// for plans that later gain cross-host edges. On a cycle, returns the nodes on it.
    pub fn check_acyclic(&self) -> Result<(), Vec<String>> {
        match petgraph::algo::toposort(&self.graph, None) {
            Ok(_) => Ok(()),
            Err(cycle) => {
                let start = cycle.node_id();
                let sccs = petgraph::algo::kosaraju_scc(&self.graph);
                let path = sccs
                    .into_iter()
                    .find(|c| c.contains(&start))
                    .unwrap_or_else(|| vec![start]);
                Err(path
                    .into_iter()
                    .map(|i| {
                        let n = &self.graph[i];
                        format!(
                            "{}{}",
                            n.host
                                .as_deref()
                                .map(|h| format!("{h}: "))
                                .unwrap_or_default(),
                            step_label(&n.step)
                        )
                    })
                    .collect())
            }
        }
    }
}

/// The step's name within its play: `facts`, `task3`, `handlers`.
fn column_label(s: &Step) -> String {
    match s {
        Step::Facts { .. } => "facts".into(),
        Step::Task { task, .. } => format!("task{}", task + 1),
        Step::Handlers { .. } => "handlers".into(),
        Step::Barrier { label, .. } => label.clone(),
    }
}

fn step_label(s: &Step) -> String {
    match s {
        Step::Facts { play } => format!("play{} facts", play + 1),
        Step::Task { play, task } => format!("play{} task{}", play + 1, task + 1),
        Step::Handlers { play } => format!("play{} handlers", play + 1),
        Step::Barrier { play, label } => format!("play{} {label}", play + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(ntasks: usize, strategy: Strategy, serial: Vec<Batch>, facts: bool) -> Play {
        crate::model::play::test_support::play(ntasks, strategy, serial, facts)
    }

    fn hosts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("h{i}")).collect()
    }

    #[test]
    fn serial_batches_follow_ansible_sizes() {
        let h = hosts(5);
        let sizes = |s: Vec<Batch>| batches(&h, &s).iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(vec![]), vec![5]);
        assert_eq!(sizes(vec![Batch::Count(2)]), vec![2, 2, 1]);
        assert_eq!(
            sizes(vec![Batch::Count(1), Batch::Percent(50)]),
            vec![1, 2, 2]
        );
        assert_eq!(sizes(vec![Batch::Percent(10)]), vec![1, 1, 1, 1, 1]);
    }

    #[test]
    fn linear_play_dot_snapshot() {
        let p = play(2, Strategy::Linear, vec![], false);
        let plan = Plan::build(&[PlayTarget {
            play: &p,
            hosts: hosts(2),
        }]);
        let expected = "\
digraph plan {
  rankdir=LR;
  n0 [label=\"h1: play1 task1\"];
  n1 [label=\"h2: play1 task1\"];
  n2 [label=\"play1 after task1\",shape=box];
  n3 [label=\"h1: play1 task2\"];
  n4 [label=\"h2: play1 task2\"];
  n5 [label=\"play1 after task2\",shape=box];
  n6 [label=\"h1: play1 handlers\"];
  n7 [label=\"h2: play1 handlers\"];
  n8 [label=\"play1 end of batch 1\",shape=box];
  n0 -> n2;
  n1 -> n2;
  n2 -> n3;
  n2 -> n4;
  n3 -> n5;
  n4 -> n5;
  n5 -> n6;
  n5 -> n7;
  n6 -> n8;
  n7 -> n8;
}
";
        assert_eq!(plan.to_dot(), expected);
        assert!(plan.check_acyclic().is_ok());
    }

    #[test]
    fn free_strategy_has_no_per_task_barriers() {
        let p = play(3, Strategy::Free, vec![], true);
        let plan = Plan::build(&[PlayTarget {
            play: &p,
            hosts: hosts(3),
        }]);
        let barriers = plan
            .graph()
            .node_weights()
            .filter(|n| n.host.is_none())
            .count();
        assert_eq!(barriers, 1, "only the batch end:\n{}", plan.to_dot());
        // 3 hosts x (facts + 3 tasks + handlers) + 1 barrier
        assert_eq!(plan.node_count(), 3 * 5 + 1);
    }

    #[test]
    fn serial_batches_and_plays_run_one_after_another() {
        let p1 = play(1, Strategy::Linear, vec![Batch::Count(1)], false);
        let p2 = play(1, Strategy::Linear, vec![], false);
        let plan = Plan::build(&[
            PlayTarget {
                play: &p1,
                hosts: hosts(2),
            },
            PlayTarget {
                play: &p2,
                hosts: hosts(2),
            },
        ]);
        let order = petgraph::algo::toposort(plan.graph(), None).unwrap();
        let pos = |host: &str, play: usize, batch: usize| {
            order
                .iter()
                .position(|i| {
                    let n = plan.node(*i);
                    n.host.as_deref() == Some(host)
                        && n.batch == batch
                        && n.step == Step::Task { play, task: 0 }
                })
                .unwrap()
        };
        // h2 (batch 2) starts only after h1's batch ended; play 2 only after play 1.
        let h1_handlers = order
            .iter()
            .position(|i| {
                plan.node(*i).host.as_deref() == Some("h1")
                    && plan.node(*i).step == Step::Handlers { play: 0 }
            })
            .unwrap();
        assert!(pos("h2", 0, 1) > h1_handlers);
        assert!(pos("h1", 1, 0) > pos("h2", 0, 1));
        // Every play-2 node is reachable from every play-1 node.
        let p1_nodes: Vec<_> = plan
            .graph()
            .node_indices()
            .filter(|i| matches!(plan.node(*i).step, Step::Task { play: 0, .. }))
            .collect();
        let p2_nodes: Vec<_> = plan
            .graph()
            .node_indices()
            .filter(|i| matches!(plan.node(*i).step, Step::Task { play: 1, .. }))
            .collect();
        for a in &p1_nodes {
            for b in &p2_nodes {
                assert!(petgraph::algo::has_path_connecting(
                    plan.graph(),
                    *a,
                    *b,
                    None
                ));
            }
        }
    }

    #[test]
    fn cycle_report_names_the_nodes_on_it() {
        let p = play(2, Strategy::Free, vec![], false);
        let mut plan = Plan::build(&[PlayTarget {
            play: &p,
            hosts: hosts(1),
        }]);
        // Only tests can add edges: close a loop from the last task back to the first.
        plan.graph
            .add_edge(NodeIndex::new(1), NodeIndex::new(0), ());
        let err = plan.check_acyclic().unwrap_err();
        assert!(err.contains(&"h1: play1 task1".to_string()), "{err:?}");
        assert!(err.contains(&"h1: play1 task2".to_string()), "{err:?}");
    }
}
