//! Sticky, balanced assignment of partitions to workers: a pure function of
//! the partitions, the live workers and who owns what now.
//!
//! Balanced means every worker's count is `n / w` or `n / w + 1`. Sticky
//! means a partition keeps its owner unless that owner holds more than its
//! quota; the `+1` quotas go to the workers that already hold the most, so
//! the number of partitions taken from a live owner is the least any balanced
//! assignment could move.

use std::collections::{BTreeMap, BTreeSet};

/// The balanced assignment closest to `current`.
///
/// `current` may mention dead workers or unknown partitions; those entries
/// are ignored (the partitions count as unowned). With no workers the result
/// is empty. Deterministic: the same input gives the same output.
pub fn balance<W: Ord + Clone>(
    partitions: &[i32],
    workers: &[W],
    current: &BTreeMap<i32, W>,
) -> BTreeMap<i32, W> {
    let workers: BTreeSet<&W> = workers.iter().collect();
    let partitions: BTreeSet<i32> = partitions.iter().copied().collect();
    if workers.is_empty() {
        return BTreeMap::new();
    }

    // What each live worker holds now, in partition order.
    let mut held: BTreeMap<&W, Vec<i32>> = workers.iter().map(|w| (*w, Vec::new())).collect();
    let mut pool = Vec::new();
    for &p in &partitions {
        match current.get(&p).and_then(|owner| held.get_mut(owner)) {
            Some(list) => list.push(p),
            None => pool.push(p),
        }
    }

    // The `+1` quotas go to whoever already holds the most: that keeps the
    // most partitions where they are.
    let base = partitions.len() / workers.len();
    let extra = partitions.len() % workers.len();
    let mut by_holding: Vec<&W> = workers.iter().copied().collect();
    by_holding.sort_by(|a, b| held[b].len().cmp(&held[a].len()).then_with(|| a.cmp(b)));
    let quota: BTreeMap<&W, usize> = by_holding
        .iter()
        .enumerate()
        .map(|(rank, w)| (*w, base + usize::from(rank < extra)))
        .collect();

    let mut target = BTreeMap::new();
    let mut count: BTreeMap<&W, usize> = BTreeMap::new();
    for (w, list) in &held {
        let keep = list.len().min(quota[w]);
        for &p in &list[..keep] {
            target.insert(p, (*w).clone());
        }
        pool.extend_from_slice(&list[keep..]);
        count.insert(w, keep);
    }

    // Fill the workers below quota, the emptiest first.
    pool.sort_unstable();
    for p in pool {
        let w = count
            .iter()
            .filter(|(w, c)| **c < quota[**w])
            .min_by_key(|(w, c)| (**c, **w))
            .map(|(w, _)| *w)
            .expect("quotas add up to the partition count");
        *count.get_mut(w).expect("known worker") += 1;
        target.insert(p, w.clone());
    }
    target
}

/// Partitions that `target` takes away from a live owner in `current`.
pub fn moved<W: Ord>(current: &BTreeMap<i32, W>, target: &BTreeMap<i32, W>, live: &[W]) -> usize {
    current
        .iter()
        .filter(|(p, owner)| live.contains(owner) && target.get(p) != Some(owner))
        .count()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn counts(target: &BTreeMap<i32, u8>, workers: &[u8]) -> Vec<usize> {
        workers
            .iter()
            .map(|w| target.values().filter(|o| *o == w).count())
            .collect()
    }

    /// The fewest partitions any balanced assignment must take from live
    /// owners, by trying every choice of which workers get the `+1`.
    fn least_moves(current: &BTreeMap<i32, u8>, workers: &[u8], n: usize) -> usize {
        let w = workers.len();
        if w == 0 {
            return 0;
        }
        let held = counts(current, workers);
        let (base, extra) = (n / w, n % w);
        (0u32..1 << w)
            .filter(|set| set.count_ones() as usize == extra)
            .map(|set| {
                (0..w)
                    .map(|i| {
                        let quota = base + usize::from(set & (1 << i) != 0);
                        held[i].saturating_sub(quota)
                    })
                    .sum()
            })
            .min()
            .unwrap()
    }

    #[test]
    fn spreads_evenly_from_nothing() {
        let t = balance(&[0, 1, 2, 3, 4, 5], &["a", "b", "c"], &BTreeMap::new());
        assert_eq!(t.len(), 6);
        for w in ["a", "b", "c"] {
            assert_eq!(t.values().filter(|o| **o == w).count(), 2);
        }
    }

    #[test]
    fn a_join_takes_only_the_excess() {
        let current: BTreeMap<i32, &str> = (0..6).map(|p| (p, "a")).collect();
        let t = balance(&[0, 1, 2, 3, 4, 5], &["a", "b"], &current);
        assert_eq!(moved(&current, &t, &["a", "b"]), 3);
        // `a` keeps its lowest partitions.
        assert_eq!(t[&0], "a");
        assert_eq!(t[&5], "b");
    }

    #[test]
    fn the_extra_goes_to_who_holds_more() {
        // 7 partitions, 3 workers: quotas 3, 2, 2. `b` holds 3, so it keeps them all.
        let current: BTreeMap<i32, &str> = [(0, "a"), (1, "a"), (2, "b"), (3, "b"), (4, "b")]
            .into_iter()
            .collect();
        let t = balance(&[0, 1, 2, 3, 4, 5, 6], &["a", "b", "c"], &current);
        assert_eq!(moved(&current, &t, &["a", "b", "c"]), 0);
        assert_eq!(t[&5], "c");
        assert_eq!(t[&6], "c");
    }

    #[test]
    fn dead_owners_and_unknown_partitions_are_ignored() {
        let current: BTreeMap<i32, &str> = [(0, "dead"), (1, "a"), (9, "a")].into_iter().collect();
        let t = balance(&[0, 1], &["a"], &current);
        assert_eq!(t, [(0, "a"), (1, "a")].into_iter().collect());
        assert!(balance(&[0, 1], &[] as &[&str], &current).is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Leave(u8),
        AddPartitions(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..8).prop_map(Op::Join),
            2 => (0u8..8).prop_map(Op::Leave),
            1 => (1u8..6).prop_map(Op::AddPartitions),
        ]
    }

    proptest! {
        #[test]
        fn any_sequence_of_joins_and_leaves_stays_balanced_with_least_movement(
            initial in 0usize..20,
            ops in prop::collection::vec(op(), 1..40),
        ) {
            let mut n = initial;
            let mut workers: Vec<u8> = Vec::new();
            let mut current: BTreeMap<i32, u8> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Join(w) if !workers.contains(&w) => workers.push(w),
                    Op::Leave(w) => {
                        workers.retain(|x| *x != w);
                        current.retain(|_, o| *o != w);
                    }
                    Op::AddPartitions(k) => n += usize::from(k),
                    Op::Join(_) => {}
                }
                let partitions: Vec<i32> = (0..n as i32).collect();
                let target = balance(&partitions, &workers, &current);

                if workers.is_empty() {
                    prop_assert!(target.is_empty());
                } else {
                    // Every partition has exactly one owner, and it is live.
                    prop_assert_eq!(target.keys().copied().collect::<Vec<_>>(), partitions.clone());
                    prop_assert!(target.values().all(|o| workers.contains(o)));
                    // Balanced.
                    let c = counts(&target, &workers);
                    let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
                    prop_assert!(hi - lo <= 1, "counts {:?}", c);
                }
                // Only what must move moves.
                prop_assert_eq!(
                    moved(&current, &target, &workers),
                    least_moves(&current, &workers, n)
                );
                current = target;
            }
        }

        #[test]
        fn deterministic(n in 0i32..30, ws in prop::collection::btree_set(0u8..10, 0..6)) {
            let partitions: Vec<i32> = (0..n).collect();
            let workers: Vec<u8> = ws.into_iter().collect();
            let mut reversed = workers.clone();
            reversed.reverse();
            let a = balance(&partitions, &workers, &BTreeMap::new());
            prop_assert_eq!(&a, &balance(&partitions, &reversed, &BTreeMap::new()));
            prop_assert_eq!(&a, &balance(&partitions, &workers, &a));
        }
    }
}
