//! Sticky, balanced assignment of partitions to workers: a pure function of
//! the partitions, the live workers and who owns what now.
//!
//! Balanced means every worker's count is `n / w` or `n / w + 1`. Sticky
//! means a partition keeps its owner unless that owner holds more than its
//! quota; the `+1` quotas go to the workers that already hold the most, so
//! the number of partitions taken from a live owner is the least any balanced
//! assignment could move.
//!
//! Of the assignments that are that balanced and that sticky, it prefers
//! one where each worker's partitions have as few leader brokers as possible: a
//! consumer sends one fetch per leader it reads from, and every broker
//! answers each of its fetches whenever a produce request lands, so fewer
//! (worker, leader) pairs mean fewer requests for the brokers. Leaders are
//! only a preference; a partition never moves because its leader changed.

use std::collections::{BTreeMap, BTreeSet};

/// Leader broker of each partition, as last seen in the metadata; a
/// partition missing here has no known leader.
pub type Leaders = BTreeMap<i32, i32>;

/// The balanced assignment closest to `current`.
///
/// `current` may mention dead workers or unknown partitions; those entries
/// are ignored (the partitions count as unowned). With no workers the result
/// is empty. Deterministic: the same input gives the same output.
pub fn balance<W: Ord + Clone>(
    partitions: &[i32],
    workers: &[W],
    current: &BTreeMap<i32, W>,
    leaders: &Leaders,
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
    // Leaders each worker reads from in `target` so far.
    let mut reads: BTreeMap<&W, BTreeSet<i32>> = BTreeMap::new();
    for (w, list) in held.iter_mut() {
        let keep = list.len().min(quota[w]);
        // An owner above quota keeps whole leader groups, largest first.
        if keep < list.len() {
            let sizes = leader_counts(list, leaders);
            list.sort_by_key(|p| match leaders.get(p) {
                Some(l) => (std::cmp::Reverse(sizes[l]), *l, *p),
                None => (std::cmp::Reverse(1), i32::MAX, *p),
            });
        }
        for &p in &list[..keep] {
            target.insert(p, (*w).clone());
            reads.entry(w).or_default().extend(leaders.get(&p));
        }
        pool.extend_from_slice(&list[keep..]);
        count.insert(w, keep);
    }

    // Fill the workers below quota: a worker that already reads from the
    // partition's leader first, then the emptiest. Partitions of one leader
    // come one after another, so a group tends to stay together.
    pool.sort_unstable_by_key(|p| (leaders.get(p).copied().unwrap_or(i32::MAX), *p));
    for p in pool {
        let leader = leaders.get(&p);
        let w = count
            .iter()
            .filter(|(w, c)| **c < quota[**w])
            .min_by_key(|(w, c)| {
                let reads_leader =
                    leader.is_some_and(|l| reads.get(**w).is_some_and(|r| r.contains(l)));
                (!reads_leader, **c, **w)
            })
            .map(|(w, _)| *w)
            .expect("quotas add up to the partition count");
        *count.get_mut(w).expect("known worker") += 1;
        reads.entry(w).or_default().extend(leader);
        target.insert(p, w.clone());
    }
    target
}

/// How many of `partitions` each leader leads.
fn leader_counts(partitions: &[i32], leaders: &Leaders) -> BTreeMap<i32, usize> {
    let mut sizes = BTreeMap::new();
    for l in partitions.iter().filter_map(|p| leaders.get(p)) {
        *sizes.entry(*l).or_default() += 1;
    }
    sizes
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
        let t = balance(
            &[0, 1, 2, 3, 4, 5],
            &["a", "b", "c"],
            &BTreeMap::new(),
            &Leaders::new(),
        );
        assert_eq!(t.len(), 6);
        for w in ["a", "b", "c"] {
            assert_eq!(t.values().filter(|o| **o == w).count(), 2);
        }
    }

    #[test]
    fn a_join_takes_only_the_excess() {
        let current: BTreeMap<i32, &str> = (0..6).map(|p| (p, "a")).collect();
        let t = balance(&[0, 1, 2, 3, 4, 5], &["a", "b"], &current, &Leaders::new());
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
        let t = balance(
            &[0, 1, 2, 3, 4, 5, 6],
            &["a", "b", "c"],
            &current,
            &Leaders::new(),
        );
        assert_eq!(moved(&current, &t, &["a", "b", "c"]), 0);
        assert_eq!(t[&5], "c");
        assert_eq!(t[&6], "c");
    }

    #[test]
    fn dead_owners_and_unknown_partitions_are_ignored() {
        let current: BTreeMap<i32, &str> = [(0, "dead"), (1, "a"), (9, "a")].into_iter().collect();
        let t = balance(&[0, 1], &["a"], &current, &Leaders::new());
        assert_eq!(t, [(0, "a"), (1, "a")].into_iter().collect());
        assert!(balance(&[0, 1], &[] as &[&str], &current, &Leaders::new()).is_empty());
    }

    /// Distinct (worker, leader) pairs of an assignment: the fetch sessions the
    /// workers' consumers keep with the brokers.
    fn fetch_pairs<W: Ord>(target: &BTreeMap<i32, W>, leaders: &Leaders) -> usize {
        target
            .iter()
            .filter_map(|(p, w)| leaders.get(p).map(|l| (w, *l)))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Partition `p` led by `cycle[p % len]` (`None`: no known leader).
    fn cycle_leaders(partitions: &[i32], cycle: &[Option<i32>]) -> Leaders {
        partitions
            .iter()
            .filter_map(|&p| cycle[p as usize % cycle.len()].map(|l| (p, l)))
            .collect()
    }

    /// The leaders Kafka gave a 6-partition topic on the local 3-node cluster.
    fn six_on_three() -> Leaders {
        [(0, 3), (1, 1), (2, 2), (3, 1), (4, 3), (5, 2)]
            .into_iter()
            .collect()
    }

    #[test]
    fn a_join_keeps_whole_leader_groups() {
        let leaders = six_on_three();
        let current: BTreeMap<i32, &str> = (0..6).map(|p| (p, "a")).collect();
        let t = balance(&[0, 1, 2, 3, 4, 5], &["a", "b"], &current, &leaders);
        assert_eq!(moved(&current, &t, &["a", "b"]), 3);
        // Leader-blind, each worker would read from all three brokers (6 pairs).
        assert_eq!(fetch_pairs(&t, &leaders), 4);
        assert_eq!(
            fetch_pairs(
                &balance(&[0, 1, 2, 3, 4, 5], &["a", "b"], &current, &Leaders::new()),
                &leaders
            ),
            6
        );
    }

    #[test]
    fn from_nothing_workers_share_as_few_leaders_as_possible() {
        let leaders = six_on_three();
        let all = [0, 1, 2, 3, 4, 5];
        let two = balance(&all, &["a", "b"], &BTreeMap::new(), &leaders);
        assert_eq!(fetch_pairs(&two, &leaders), 4);
        let three = balance(&all, &["a", "b", "c"], &BTreeMap::new(), &leaders);
        assert_eq!(fetch_pairs(&three, &leaders), 3);
        // A third worker joining two: each ends up reading from one leader.
        let joined = balance(&all, &["a", "b", "c"], &two, &leaders);
        assert_eq!(moved(&two, &joined, &["a", "b", "c"]), 2);
        assert_eq!(fetch_pairs(&joined, &leaders), 3);
    }

    #[test]
    fn a_partition_without_a_known_leader_still_gets_an_owner() {
        let leaders: Leaders = [(0, 1), (1, 1)].into_iter().collect();
        let t = balance(&[0, 1, 2, 3], &["a", "b"], &BTreeMap::new(), &leaders);
        assert_eq!(t.len(), 4);
        assert_eq!(t[&0], t[&1]);
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
            leader_cycle in prop::collection::vec(prop::option::of(0i32..4), 1..8),
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
                let leaders = cycle_leaders(&partitions, &leader_cycle);
                let target = balance(&partitions, &workers, &current, &leaders);

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
        fn deterministic(
            n in 0i32..30,
            ws in prop::collection::btree_set(0u8..10, 0..6),
            leader_cycle in prop::collection::vec(prop::option::of(0i32..4), 1..8),
        ) {
            let partitions: Vec<i32> = (0..n).collect();
            let leaders = cycle_leaders(&partitions, &leader_cycle);
            let workers: Vec<u8> = ws.into_iter().collect();
            let mut reversed = workers.clone();
            reversed.reverse();
            let a = balance(&partitions, &workers, &BTreeMap::new(), &leaders);
            prop_assert_eq!(&a, &balance(&partitions, &reversed, &BTreeMap::new(), &leaders));
            prop_assert_eq!(&a, &balance(&partitions, &workers, &a, &leaders));
        }
    }
}
