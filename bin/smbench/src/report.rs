//! Figures of one run, the per-workload tables (per run and median) and the
//! JSON output.

use serde_json::{Value, json};

use crate::stats::{Latencies, median};

/// Which way a target goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// The figure must be at least the limit.
    AtLeast(f64),
    /// The figure must be at most the limit.
    AtMost(f64),
}

impl Bound {
    fn met(self, value: f64) -> bool {
        match self {
            Bound::AtLeast(limit) => value >= limit,
            Bound::AtMost(limit) => value <= limit,
        }
    }

    fn describe(self) -> String {
        match self {
            Bound::AtLeast(limit) => format!(">= {}", fmt_num(limit)),
            Bound::AtMost(limit) => format!("<= {}", fmt_num(limit)),
        }
    }
}

/// A figure's QUALITY-BAR target: its id and bound.
pub type Target = Option<(&'static str, Bound)>;

/// One figure of a run: a throughput, a latency, a baseline or a ratio.
#[derive(Debug, Clone)]
pub struct Figure {
    /// A stable machine name, e.g. `throughput_per_s`.
    pub name: String,
    /// The unit printed after the value.
    pub unit: &'static str,
    /// The value.
    pub value: f64,
    /// The QUALITY-BAR target this figure is judged by (id and bound).
    pub target: Target,
}

/// What one run of one workload measured, and whether its verification held.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// The workload's label, e.g. `W1 c=64`.
    pub workload: String,
    /// The figures, in printing order.
    pub figures: Vec<Figure>,
    /// Verification failures: any makes the run FAILED.
    pub failures: Vec<String>,
    /// Remarks worth reading (not failures).
    pub notes: Vec<String>,
}

impl RunResult {
    /// An empty result for `workload`.
    pub fn new(workload: impl Into<String>) -> Self {
        Self {
            workload: workload.into(),
            ..Self::default()
        }
    }

    /// Adds a figure without a target.
    pub fn fig(&mut self, name: &str, unit: &'static str, value: f64) {
        self.figures.push(Figure {
            name: name.to_owned(),
            unit,
            value,
            target: None,
        });
    }

    /// Adds a figure judged by a target.
    pub fn target(
        &mut self,
        name: &str,
        unit: &'static str,
        value: f64,
        id: &'static str,
        bound: Bound,
    ) {
        self.figures.push(Figure {
            name: name.to_owned(),
            unit,
            value,
            target: Some((id, bound)),
        });
    }

    /// Adds `{prefix}_p50_ms`, `_p90_ms`, `_p99_ms`, `_max_ms`.
    pub fn latencies(&mut self, prefix: &str, latencies: &Latencies) {
        self.fig(&format!("{prefix}_p50_ms"), "ms", latencies.ms(0.5));
        self.fig(&format!("{prefix}_p90_ms"), "ms", latencies.ms(0.9));
        self.fig(&format!("{prefix}_p99_ms"), "ms", latencies.ms(0.99));
        self.fig(&format!("{prefix}_max_ms"), "ms", latencies.max_ms());
    }

    /// Records a verification failure.
    pub fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    /// Records a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The value of a figure by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value)
    }

    /// Prints this run's figures right after it ran (progress on stderr-free stdout).
    pub fn print_brief(&self, run: usize) {
        let status = if self.failures.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        let main: Vec<String> = self
            .figures
            .iter()
            .filter(|f| f.target.is_some())
            .map(|f| format!("{}={} {}", f.name, fmt_num(f.value), f.unit))
            .collect();
        println!(
            "  [{}] run {}: {status}; {}",
            self.workload,
            run + 1,
            main.join(", ")
        );
        for failure in &self.failures {
            println!("    FAILED: {failure}");
        }
        for note in &self.notes {
            println!("    note: {note}");
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The results of every run of one workload.
pub struct WorkloadSummary {
    /// The workload's label.
    pub workload: String,
    /// One result per run.
    pub runs: Vec<RunResult>,
}

impl WorkloadSummary {
    /// `true` when every run passed its verification.
    pub fn passed(&self) -> bool {
        !self.runs.is_empty() && self.runs.iter().all(|r| r.failures.is_empty())
    }

    fn names(&self) -> Vec<(String, &'static str, Target)> {
        let mut names: Vec<(String, &'static str, Target)> = Vec::new();
        for run in &self.runs {
            for f in &run.figures {
                if !names.iter().any(|(n, _, _)| *n == f.name) {
                    names.push((f.name.clone(), f.unit, f.target));
                }
            }
        }
        names
    }

    fn median_of(&self, name: &str) -> f64 {
        let values: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.failures.is_empty())
            .filter_map(|r| r.get(name))
            .collect();
        median(&values)
    }

    /// Prints the table: one row per figure, one column per run, the median,
    /// the target and whether the median meets it.
    pub fn print(&self) {
        println!();
        let verdict = if self.passed() {
            ""
        } else {
            "  *** FAILED ***"
        };
        println!("== {} ({} run(s)){verdict}", self.workload, self.runs.len());
        let mut header = format!("{:<34}", "figure");
        for i in 0..self.runs.len() {
            header.push_str(&format!(" {:>10}", format!("run{}", i + 1)));
        }
        header.push_str(&format!(
            " {:>10} {:<5} {:<16} {}",
            "median", "unit", "target", "met"
        ));
        println!("{header}");
        for (name, unit, target) in self.names() {
            let mut line = format!("{name:<34}");
            for run in &self.runs {
                let cell = if !run.failures.is_empty() {
                    "FAILED".to_owned()
                } else {
                    run.get(&name).map(fmt_num).unwrap_or_else(|| "-".into())
                };
                line.push_str(&format!(" {cell:>10}"));
            }
            let med = self.median_of(&name);
            line.push_str(&format!(" {:>10} {:<5}", fmt_num(med), unit));
            if let Some((id, bound)) = target {
                let met = if !self.passed() {
                    "FAILED (verification)"
                } else if bound.met(med) {
                    "met"
                } else {
                    "NOT met"
                };
                line.push_str(&format!(
                    " {:<16} {met}",
                    format!("{id} {}", bound.describe())
                ));
            }
            println!("{line}");
        }
        for (i, run) in self.runs.iter().enumerate() {
            for failure in &run.failures {
                println!("  run{} FAILED: {failure}", i + 1);
            }
            for note in &run.notes {
                println!("  run{} note: {note}", i + 1);
            }
        }
    }

    /// This workload as JSON: per-run figures, medians and verdicts.
    pub fn to_json(&self) -> Value {
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                let figures: serde_json::Map<String, Value> = r
                    .figures
                    .iter()
                    .map(|f| (f.name.clone(), json!(f.value)))
                    .collect();
                json!({
                    "passed": r.failures.is_empty(),
                    "failures": r.failures,
                    "notes": r.notes,
                    "figures": figures,
                })
            })
            .collect();
        let medians: serde_json::Map<String, Value> = self
            .names()
            .into_iter()
            .map(|(name, unit, target)| {
                let med = self.median_of(&name);
                let target = target.map(|(id, bound)| {
                    json!({
                        "id": id,
                        "bound": bound.describe(),
                        "met": self.passed() && bound.met(med),
                    })
                });
                (
                    name,
                    json!({ "median": if med.is_nan() { Value::Null } else { json!(med) }, "unit": unit, "target": target }),
                )
            })
            .collect();
        json!({
            "workload": self.workload,
            "passed": self.passed(),
            "runs": runs,
            "medians": medians,
        })
    }
}
