//! W2's topology, scaled: packages x 4 models x 2 containers, spread over
//! nodes (node n hosts a contiguous block of packages), their `Package/` and
//! `Scenario/` definitions, node reports and the expected state keys.

use std::collections::HashMap;

use transport_grpc::proto::monitoringserver as ms;

use crate::rules;
use crate::stats::SplitMix64;

/// Models per package.
pub const MODELS: usize = 4;
/// Containers per model.
pub const CONTAINERS: [&str; 2] = ["a", "b"];

/// What a model's containers report (both containers of a model share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// `Status: running`.
    Running,
    /// `Status: exited`, `ExitCode: 137`.
    Dead,
    /// `Status: paused`.
    Paused,
    /// `Status: exited`, `ExitCode: 0`.
    Exited,
}

impl Cond {
    const ALL: [Cond; 4] = [Cond::Running, Cond::Dead, Cond::Paused, Cond::Exited];

    /// A realistic 11-key podman `state` map.
    pub fn podman(self) -> HashMap<String, String> {
        let (status, exit) = match self {
            Cond::Running => ("running", "0"),
            Cond::Dead => ("exited", "137"),
            Cond::Paused => ("paused", "0"),
            Cond::Exited => ("exited", "0"),
        };
        let running = self == Cond::Running || self == Cond::Paused;
        [
            ("Status", status),
            ("Running", if running { "true" } else { "false" }),
            (
                "Paused",
                if self == Cond::Paused {
                    "true"
                } else {
                    "false"
                },
            ),
            ("Restarting", "false"),
            ("OOMKilled", "false"),
            ("Dead", "false"),
            ("Pid", if running { "4242" } else { "0" }),
            ("ExitCode", exit),
            ("Error", ""),
            ("StartedAt", "2025-09-01T10:00:00Z"),
            (
                "FinishedAt",
                if running {
                    "0001-01-01T00:00:00Z"
                } else {
                    "2025-09-01T10:05:00Z"
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

/// Packages over nodes.
#[derive(Debug, Clone, Copy)]
pub struct Topology {
    /// Number of packages (each with one scenario).
    pub packages: usize,
    /// Number of nodes; must divide `packages`.
    pub nodes: usize,
}

/// Model states of every model (index `p * MODELS + m`) in one round.
pub type Round = Vec<Cond>;

impl Topology {
    /// Packages per node.
    pub fn per_node(&self) -> usize {
        self.packages / self.nodes
    }

    /// All models.
    pub fn models(&self) -> usize {
        self.packages * MODELS
    }

    /// The node's name.
    pub fn node_name(n: usize) -> String {
        format!("node-{n}")
    }

    /// The packages hosted by node `n`.
    pub fn packages_of(&self, n: usize) -> std::ops::Range<usize> {
        n * self.per_node()..(n + 1) * self.per_node()
    }

    /// The model name.
    pub fn model(p: usize, m: usize) -> String {
        format!("p{p}-m{m}")
    }

    /// `Package/p{i}` and `Scenario/s{i}` definitions as the ApiServer stores them.
    pub fn definitions(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.packages * 2);
        for p in 0..self.packages {
            let node = Self::node_name(p / self.per_node());
            let models: String = (0..MODELS)
                .map(|m| {
                    format!(
                        "    - name: {}\n      node: {node}\n      resources:\n        volume:\n        network:\n",
                        Self::model(p, m)
                    )
                })
                .collect();
            out.push((
                format!("Package/p{p}"),
                format!(
                    "apiVersion: v1\nkind: Package\nmetadata:\n  name: p{p}\nspec:\n  pattern:\n    - type: plain\n  models:\n{models}"
                ),
            ));
            out.push((
                format!("Scenario/s{p}"),
                format!(
                    "apiVersion: v1\nkind: Scenario\nmetadata:\n  name: s{p}\nspec:\n  condition:\n  action: update\n  target: p{p}\n"
                ),
            ));
        }
        out
    }

    /// Node `n`'s full container list for a round.
    pub fn report(&self, n: usize, round: &Round) -> ms::ContainerList {
        let mut containers = Vec::with_capacity(self.per_node() * MODELS * CONTAINERS.len());
        for p in self.packages_of(n) {
            for m in 0..MODELS {
                let model = Self::model(p, m);
                let state = round[p * MODELS + m].podman();
                for c in CONTAINERS {
                    containers.push(ms::ContainerInfo {
                        id: format!("{p:05}{m}{c}0123456789abcdef"),
                        names: vec![format!("/model-{model}-{c}")],
                        image: "registry.local/piccolo/app:1.0".into(),
                        state: state.clone(),
                        config: HashMap::new(),
                        annotation: HashMap::from([("model".to_owned(), model.clone())]),
                        stats: HashMap::new(),
                    });
                }
            }
        }
        ms::ContainerList {
            node_name: Self::node_name(n),
            containers,
        }
    }

    /// The expected state of package `p` in a round (§1-§3).
    pub fn package_state(&self, p: usize, round: &Round) -> &'static str {
        let models: Vec<&str> = (0..MODELS)
            .map(|m| model_state(round[p * MODELS + m]))
            .collect();
        rules::package_state(&models)
    }

    /// Every container, model and package key of node `n` with its expected value.
    pub fn expected(&self, n: usize, round: &Round) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.per_node() * (1 + MODELS * (1 + CONTAINERS.len())));
        for p in self.packages_of(n) {
            for m in 0..MODELS {
                let model = Self::model(p, m);
                let cond = round[p * MODELS + m];
                let container = rules::container_state(&cond.podman());
                for c in CONTAINERS {
                    out.push((
                        format!("/container/model-{model}-{c}/state"),
                        container.to_owned(),
                    ));
                }
                out.push((
                    format!("/model/{model}/state"),
                    model_state(cond).to_owned(),
                ));
            }
            out.push((
                format!("/package/p{p}/state"),
                self.package_state(p, round).to_owned(),
            ));
        }
        out
    }

    /// The expected keys of every node.
    pub fn expected_all(&self, round: &Round) -> Vec<(String, String)> {
        (0..self.nodes)
            .flat_map(|n| self.expected(n, round))
            .collect()
    }

    /// `rounds` rounds: the first draws every model's state among the four,
    /// each later one gives a fraction `flip` of the models a different state.
    pub fn draw_rounds(&self, rounds: usize, flip: f64, rng: &mut SplitMix64) -> Vec<Round> {
        self.draw_rounds_among(&Cond::ALL, rounds, flip, rng)
    }

    /// [`draw_rounds`](Self::draw_rounds) with the models' states drawn
    /// among `conds` only (distinct, at least two): the first round draws
    /// each model's state, each later one gives a fraction `flip` of the
    /// models another of `conds`. With the four conditions it draws exactly
    /// what `draw_rounds` does.
    pub fn draw_rounds_among(
        &self,
        conds: &[Cond],
        rounds: usize,
        flip: f64,
        rng: &mut SplitMix64,
    ) -> Vec<Round> {
        assert!(conds.len() >= 2, "at least two conditions to flip between");
        let mut out: Vec<Round> = Vec::with_capacity(rounds);
        for r in 0..rounds {
            let round: Round = match out.last() {
                None => (0..self.models())
                    .map(|_| conds[rng.below(conds.len())])
                    .collect(),
                Some(previous) => previous
                    .iter()
                    .map(|&cond| {
                        if rng.unit() < flip {
                            let others: Vec<Cond> =
                                conds.iter().copied().filter(|c| *c != cond).collect();
                            others[rng.below(others.len())]
                        } else {
                            cond
                        }
                    })
                    .collect(),
            };
            debug_assert_eq!(round.len(), self.models(), "round {r}");
            out.push(round);
        }
        out
    }

    /// How many times each package enters Error over the rounds, starting
    /// from the given package states (STATE-MACHINES §3: an edge into Error).
    pub fn error_entries(&self, initial: &[String], rounds: &[Round]) -> Vec<usize> {
        let mut previous: Vec<String> = initial.to_vec();
        let mut entries = vec![0; self.packages];
        for round in rounds {
            for (p, entry) in entries.iter_mut().enumerate() {
                let now = self.package_state(p, round);
                if now == "Error" && previous[p] != "Error" {
                    *entry += 1;
                }
                previous[p] = now.to_owned();
            }
        }
        entries
    }
}

/// The model state of a model whose two containers report `cond`.
fn model_state(cond: Cond) -> &'static str {
    let container = rules::container_state(&cond.podman());
    rules::model_state(&[container; 2])
}
