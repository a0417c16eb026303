//! A stable counting sort: groups items by a small dense key in linear
//! time, without comparing keys. Planning uses it to group a report's
//! containers by model (the models numbered in first-seen order), where a
//! comparison sort on model names was a measurable part of a large report.

/// Reorders `items` so that the items of one group are adjacent, groups in
/// ascending order, and items keep their relative order within a group.
///
/// `group_of` gives each item's group, below `groups`. Returns the items
/// and the start of each group: group `g` is `items[starts[g]..starts[g + 1]]`
/// (`starts` has `groups + 1` entries, the last one `items.len()`).
pub(crate) fn group_by<T>(
    items: Vec<T>,
    groups: usize,
    group_of: impl Fn(&T) -> usize,
) -> (Vec<T>, Vec<usize>) {
    let indexes: Vec<usize> = items.iter().map(group_of).collect();
    let mut starts = vec![0usize; groups + 1];
    for &i in &indexes {
        starts[i + 1] += 1;
    }
    for i in 0..groups {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut grouped: Vec<Option<T>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for (item, i) in items.into_iter().zip(indexes) {
        grouped[next[i]] = Some(item);
        next[i] += 1;
    }
    (grouped.into_iter().flatten().collect(), starts)
}

#[cfg(test)]
mod tests {
    use super::group_by;

    /// Items as (group, label), the number of groups, the labels in grouped
    /// order, and the groups' starts.
    type Case = (
        &'static [(usize, char)],
        usize,
        &'static str,
        &'static [usize],
    );

    #[test]
    fn items_are_grouped_stably_with_each_groups_range() {
        let cases: &[Case] = &[
            (&[], 0, "", &[0]),
            (&[], 2, "", &[0, 0, 0]),
            (&[(0, 'a')], 1, "a", &[0, 1]),
            (&[(1, 'a'), (0, 'b')], 2, "ba", &[0, 1, 2]),
            (
                &[(1, 'a'), (0, 'b'), (1, 'c'), (0, 'd'), (2, 'e')],
                3,
                "bdace",
                &[0, 2, 4, 5],
            ),
            // An empty group in the middle has an empty range.
            (&[(2, 'a'), (0, 'b')], 3, "ba", &[0, 1, 1, 2]),
        ];
        for (items, groups, labels, starts) in cases {
            let (grouped, got) = group_by(items.to_vec(), *groups, |(g, _)| *g);
            let got_labels: String = grouped.iter().map(|(_, l)| *l).collect();
            assert_eq!(got_labels, *labels, "{items:?}");
            assert_eq!(got, *starts, "{items:?}");
        }
    }
}
