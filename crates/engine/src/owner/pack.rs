//! How a batch becomes store transactions, as pure functions: inputs that
//! depend on each other form groups ([`group`]); groups are packed into
//! chains of transactions ([`pack`]): small groups share a transaction, a
//! group too large for one gets a chain of its own, split between its atoms.

use state_store::Op;

/// What a write of a transaction is, to record its revision after the
/// commit: a state change or a node record of an input (its index in its
/// chain, the write's index in its plan), or bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Change(usize, usize),
    Node(usize, usize),
    Other,
}

/// One store operation with its guard (key, revision it must have).
#[derive(Debug)]
pub(super) struct Unit {
    pub(super) guard: Option<(String, i64)>,
    pub(super) op: Op,
    pub(super) target: Target,
}

/// The operations of one resource's change that commit together: the state
/// key, its history entry and its outbox record (the first `core` units,
/// never split), then the pruning of old history entries (which may spill
/// over into the next transaction of a split input). A node record is an
/// atom alone.
#[derive(Debug)]
pub(super) struct Atom {
    pub(super) units: Vec<Unit>,
    pub(super) core: usize,
}

impl Atom {
    /// An atom none of whose units may be split from the others.
    pub(super) fn whole(units: Vec<Unit>) -> Self {
        let core = units.len();
        Self { units, core }
    }

    fn len(&self) -> usize {
        self.units.len()
    }
}

/// The operations of one group: per input (in plan order), its atoms.
pub(super) type GroupOps = Vec<Vec<Atom>>;

/// A chain of transactions committed one after another: the groups it
/// carries (indices, in order) and its transactions. The inputs of a chain
/// are its groups' inputs in that order; targets index them.
#[derive(Debug, Default)]
pub(super) struct ChainOps {
    pub(super) groups: Vec<usize>,
    pub(super) txns: Vec<Vec<Unit>>,
}

/// The fewest operations a transaction may hold: the core of the largest
/// atom (a state, its history entry, an outbox record) must fit.
pub(super) const MIN_TXN_OPS: usize = 4;

/// Groups inputs that depend on each other: `deps[i]` lists the inputs
/// (indices below `i`) whose uncommitted writes input `i` read or
/// overwrites. Returns the groups, each in input order, ordered by their
/// first input.
pub(super) fn group(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..deps.len()).collect();
    for (i, deps) in deps.iter().enumerate() {
        for &j in deps.iter().filter(|&&j| j < i) {
            let (a, b) = (root(&mut parent, i), root(&mut parent, j));
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of = vec![usize::MAX; deps.len()];
    for i in 0..deps.len() {
        let r = root(&mut parent, i);
        if group_of[r] == usize::MAX {
            group_of[r] = groups.len();
            groups.push(Vec::new());
        }
        groups[group_of[r]].push(i);
    }
    groups
}

/// Union-find root with path halving.
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Packs groups into chains of transactions of at most `limit` operations
/// (at least [`MIN_TXN_OPS`]). Groups that fit share one transaction, in
/// order, a new one begun when the next would not fit; a group larger than
/// `limit` gets a chain of its own, its inputs packed whole where they fit
/// and a larger input split between its atoms, in plan order (bottom-up).
pub(super) fn pack(groups: Vec<GroupOps>, limit: usize) -> Vec<ChainOps> {
    let limit = limit.max(MIN_TXN_OPS);
    let mut chains: Vec<ChainOps> = Vec::new();
    let mut shared = ChainOps::default();
    // Inputs already in `shared`: the offset of the next group's targets.
    let mut shared_inputs = 0;
    for (g, inputs) in groups.into_iter().enumerate() {
        let ops: usize = inputs.iter().flatten().map(Atom::len).sum();
        let count = inputs.len();
        if ops > limit {
            chains.push(ChainOps {
                groups: vec![g],
                txns: split(inputs, limit),
            });
            continue;
        }
        if shared_inputs > 0 && shared.txns[0].len() + ops > limit {
            chains.push(std::mem::take(&mut shared));
            shared_inputs = 0;
        }
        if shared.txns.is_empty() {
            shared.txns.push(Vec::new());
        }
        let offset = shared_inputs;
        shared.txns[0].extend(
            inputs
                .into_iter()
                .flatten()
                .flat_map(|atom| atom.units)
                .map(|unit| shifted(unit, offset)),
        );
        shared.groups.push(g);
        shared_inputs += count;
    }
    if !shared.groups.is_empty() {
        chains.push(shared);
    }
    chains
}

/// A large group's transactions: whole inputs together where they fit, an
/// input larger than one transaction cut between atoms, never inside an
/// atom's core.
fn split(inputs: GroupOps, limit: usize) -> Vec<Vec<Unit>> {
    let mut txns = Vec::new();
    let mut current: Vec<Unit> = Vec::new();
    for atoms in inputs {
        let ops: usize = atoms.iter().map(Atom::len).sum();
        if !current.is_empty() && current.len() + ops > limit {
            txns.push(std::mem::take(&mut current));
        }
        for atom in atoms {
            if !current.is_empty() && current.len() + atom.core > limit {
                txns.push(std::mem::take(&mut current));
            }
            for (k, unit) in atom.units.into_iter().enumerate() {
                if k >= atom.core && current.len() >= limit {
                    txns.push(std::mem::take(&mut current));
                }
                current.push(unit);
            }
        }
    }
    if !current.is_empty() {
        txns.push(current);
    }
    txns
}

fn shifted(mut unit: Unit, offset: usize) -> Unit {
    unit.target = match unit.target {
        Target::Change(p, c) => Target::Change(p + offset, c),
        Target::Node(p, n) => Target::Node(p + offset, n),
        Target::Other => Target::Other,
    };
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_that_depend_on_each_other_form_one_group() {
        // (case, what each input depends on, the groups)
        type Case = (&'static str, Vec<Vec<usize>>, Vec<Vec<usize>>);
        let cases: Vec<Case> = vec![
            ("none", vec![], vec![]),
            (
                "independent",
                vec![vec![], vec![], vec![]],
                vec![vec![0], vec![1], vec![2]],
            ),
            (
                "a chain",
                vec![vec![], vec![0], vec![1]],
                vec![vec![0, 1, 2]],
            ),
            (
                "two joined by a third",
                vec![vec![], vec![], vec![0, 1], vec![]],
                vec![vec![0, 1, 2], vec![3]],
            ),
            (
                "interleaved",
                vec![vec![], vec![], vec![0], vec![1]],
                vec![vec![0, 2], vec![1, 3]],
            ),
            (
                "a later input joins an earlier group",
                vec![vec![], vec![], vec![], vec![2, 0]],
                vec![vec![0, 2, 3], vec![1]],
            ),
            (
                "forward and self references are ignored",
                vec![vec![0, 2], vec![]],
                vec![vec![0], vec![1]],
            ),
        ];
        for (case, deps, expected) in cases {
            assert_eq!(group(&deps), expected, "{case}");
        }
    }

    /// A unit writing `key` for input `p` (change `c`), or bookkeeping.
    fn unit(key: &str, target: Target) -> Unit {
        Unit {
            guard: None,
            op: Op::Delete { key: key.into() },
            target,
        }
    }

    fn key(unit: &Unit) -> &str {
        match &unit.op {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }

    /// A state change `c` of input `p` of a group (keys start with
    /// `label`) with `extra` bookkeeping units in its core and `prunes`
    /// after it.
    fn change(label: &str, p: usize, c: usize, extra: usize, prunes: usize) -> Atom {
        let mut units = vec![unit(&format!("{label}s{p}.{c}"), Target::Change(p, c))];
        units.extend((0..extra).map(|k| unit(&format!("{label}b{p}.{c}.{k}"), Target::Other)));
        let core = units.len();
        units.extend((0..prunes).map(|k| unit(&format!("{label}x{p}.{c}.{k}"), Target::Other)));
        Atom { units, core }
    }

    /// The keys of each transaction of each chain.
    fn layout(chains: &[ChainOps]) -> Vec<(Vec<usize>, Vec<Vec<String>>)> {
        chains
            .iter()
            .map(|c| {
                let txns = c
                    .txns
                    .iter()
                    .map(|t| t.iter().map(|u| key(u).to_owned()).collect())
                    .collect();
                (c.groups.clone(), txns)
            })
            .collect()
    }

    fn keys(list: &str) -> Vec<String> {
        list.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn small_groups_share_transactions_and_a_large_one_is_cut_between_atoms() {
        // (case, groups, limit, expected: per chain its groups and the keys of its transactions)
        type Case = (
            &'static str,
            Vec<GroupOps>,
            usize,
            Vec<(Vec<usize>, Vec<Vec<String>>)>,
        );
        let cases: Vec<Case> = vec![
            (
                "two small groups share one transaction",
                vec![
                    vec![vec![change("A", 0, 0, 1, 0)]],
                    vec![vec![change("B", 0, 0, 1, 0)]],
                ],
                8,
                vec![(vec![0, 1], vec![keys("As0.0 Ab0.0.0 Bs0.0 Bb0.0.0")])],
            ),
            (
                "a group that does not fit starts the next shared transaction",
                vec![
                    vec![vec![change("A", 0, 0, 2, 0)]],
                    vec![vec![change("B", 0, 0, 2, 0)]],
                    vec![vec![change("C", 0, 0, 2, 0)]],
                ],
                8,
                vec![
                    (
                        vec![0, 1],
                        vec![keys("As0.0 Ab0.0.0 Ab0.0.1 Bs0.0 Bb0.0.0 Bb0.0.1")],
                    ),
                    (vec![2], vec![keys("Cs0.0 Cb0.0.0 Cb0.0.1")]),
                ],
            ),
            (
                "a large input is cut between atoms, never inside a core",
                vec![vec![vec![
                    change("", 0, 0, 0, 0),
                    change("", 0, 1, 2, 0),
                    change("", 0, 2, 2, 0),
                    change("", 0, 3, 2, 0),
                ]]],
                5,
                vec![(
                    vec![0],
                    vec![
                        keys("s0.0 s0.1 b0.1.0 b0.1.1"),
                        keys("s0.2 b0.2.0 b0.2.1"),
                        keys("s0.3 b0.3.0 b0.3.1"),
                    ],
                )],
            ),
            (
                "prunes may spill into the next transaction",
                vec![vec![vec![change("", 0, 0, 2, 4), change("", 0, 1, 0, 0)]]],
                4,
                vec![(
                    vec![0],
                    vec![
                        keys("s0.0 b0.0.0 b0.0.1 x0.0.0"),
                        keys("x0.0.1 x0.0.2 x0.0.3 s0.1"),
                    ],
                )],
            ),
            (
                "inputs of a large group are packed whole where they fit",
                vec![vec![
                    vec![change("", 0, 0, 1, 0)],
                    vec![change("", 1, 0, 1, 0)],
                    vec![change("", 2, 0, 1, 0), change("", 2, 1, 1, 0)],
                ]],
                5,
                vec![(
                    vec![0],
                    vec![
                        keys("s0.0 b0.0.0 s1.0 b1.0.0"),
                        keys("s2.0 b2.0.0 s2.1 b2.1.0"),
                    ],
                )],
            ),
            (
                "a limit below the minimum is raised to it",
                vec![vec![vec![change("", 0, 0, 3, 0)]]],
                1,
                vec![(vec![0], vec![keys("s0.0 b0.0.0 b0.0.1 b0.0.2")])],
            ),
        ];
        for (case, groups, limit, expected) in cases {
            assert_eq!(layout(&pack(groups, limit)), expected, "{case}");
        }
    }

    #[test]
    fn targets_index_the_inputs_of_their_chain() {
        let groups: Vec<GroupOps> = vec![
            vec![vec![change("", 0, 0, 0, 0)], vec![change("", 1, 0, 0, 0)]],
            vec![vec![change("", 0, 0, 0, 0), change("", 0, 1, 0, 0)]],
        ];
        let chains = pack(groups, 128);
        let targets: Vec<Target> = chains[0].txns[0].iter().map(|u| u.target).collect();
        assert_eq!(
            targets,
            [
                Target::Change(0, 0),
                Target::Change(1, 0),
                Target::Change(2, 0),
                Target::Change(2, 1)
            ]
        );
    }
}
