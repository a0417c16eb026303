//! Hash maps with a fast, per-process seeded hasher (foldhash): planning does
//! thousands of lookups of short names per report, where SipHash dominated.

/// A `HashMap` with foldhash's seeded hasher.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A `HashSet` with foldhash's seeded hasher.
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
