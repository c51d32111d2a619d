//! Which offsets of each owned partition are finished (delivered and
//! recorded in the ledger, or dead-lettered), and so how far the group may
//! commit: the contiguous finished prefix, never past an unfinished one.
//!
//! Each assignment of a partition gets a new epoch: a send that finishes
//! after its partition was revoked (and perhaps assigned again) is not
//! counted for the new owner's offsets.

use std::collections::{BTreeMap, BTreeSet};

/// Offsets in flight and commit positions, per owned partition.
#[derive(Debug, Default)]
pub struct Tracker {
    parts: BTreeMap<i32, Part>,
    next_epoch: u64,
}

#[derive(Debug)]
struct Part {
    epoch: u64,
    /// Received, not finished.
    pending: BTreeSet<i64>,
    /// One past the highest offset received.
    next: Option<i64>,
    /// The last offset committed (the next one to read).
    committed: Option<i64>,
    /// The consumer's position as sampled when every record it had handed
    /// over was received here: past it lie no unseen records, only the
    /// transaction markers and aborted records read_committed skips.
    consumer: Option<i64>,
}

impl Part {
    /// The offset to commit: the lowest unfinished, else one past the last
    /// received or the consumer's position, whichever is further.
    fn position(&self) -> Option<i64> {
        match self.pending.first() {
            Some(&first) => Some(first),
            None => self.next.max(self.consumer),
        }
    }
}

impl Tracker {
    /// `partition` is ours from now on; returns its epoch.
    pub fn assign(&mut self, partition: i32) -> u64 {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.parts.insert(
            partition,
            Part {
                epoch,
                pending: BTreeSet::new(),
                next: None,
                committed: None,
                consumer: None,
            },
        );
        epoch
    }

    /// `partition` is no longer ours; returns the offset to commit for it
    /// if that moved since the last commit.
    pub fn revoke(&mut self, partition: i32) -> Option<i64> {
        let part = self.parts.remove(&partition)?;
        part.position().filter(|&p| Some(p) != part.committed)
    }

    /// A record was read; returns the epoch to finish it with, or `None`
    /// when the partition is not ours (a record fetched before a revocation).
    pub fn received(&mut self, partition: i32, offset: i64) -> Option<u64> {
        let part = self.parts.get_mut(&partition)?;
        part.pending.insert(offset);
        part.next = Some(part.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(part.epoch)
    }

    /// The consumer's position on `partition`, sampled while every record it
    /// returned has been passed to [`Tracker::received`] (so the commit may
    /// move past the transaction markers that end a partition).
    pub fn consumer_position(&mut self, partition: i32, position: i64) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.consumer = Some(part.consumer.map_or(position, |c| c.max(position)));
        }
    }

    /// The record at `offset` is finished; ignored when its epoch is over.
    pub fn finish(&mut self, partition: i32, epoch: u64, offset: i64) {
        if let Some(part) = self.parts.get_mut(&partition) {
            if part.epoch == epoch {
                part.pending.remove(&offset);
            }
        }
    }

    /// Positions to commit now (those that moved), marked as committed.
    pub fn to_commit(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, part) in &mut self.parts {
            if let Some(p) = part.position() {
                if part.committed != Some(p) {
                    part.committed = Some(p);
                    out.push((partition, p));
                }
            }
        }
        out
    }

    /// `(partition, position)` of every owned partition with a position.
    pub fn positions(&self) -> Vec<(i32, i64)> {
        self.parts
            .iter()
            .filter_map(|(&p, part)| part.position().map(|o| (p, o)))
            .collect()
    }

    /// Owned partitions.
    pub fn partitions(&self) -> Vec<i32> {
        self.parts.keys().copied().collect()
    }

    /// Records received and not finished on `partitions`.
    pub fn unfinished_in(&self, partitions: &[i32]) -> usize {
        partitions
            .iter()
            .filter_map(|p| self.parts.get(p))
            .map(|p| p.pending.len())
            .sum()
    }

    /// Records received and not finished, over every partition.
    pub fn unfinished(&self) -> usize {
        self.parts.values().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_commit_stops_at_the_first_unfinished_offset() {
        let mut t = Tracker::default();
        let e = t.assign(0);
        for o in 10..15 {
            assert_eq!(t.received(0, o), Some(e));
        }
        t.finish(0, e, 10);
        t.finish(0, e, 12);
        assert_eq!(t.to_commit(), [(0, 11)]);
        assert_eq!(t.to_commit(), [], "nothing moved");
        t.finish(0, e, 11);
        t.finish(0, e, 14);
        assert_eq!(t.to_commit(), [(0, 13)]);
        t.finish(0, e, 13);
        assert_eq!(t.to_commit(), [(0, 15)]);
        assert_eq!(t.unfinished(), 0);
    }

    #[test]
    fn the_commit_passes_transaction_markers_only_when_nothing_is_unfinished() {
        let mut t = Tracker::default();
        let e = t.assign(1);
        t.received(1, 4);
        // Offset 5 is a commit marker: the consumer is at 6.
        t.consumer_position(1, 6);
        assert_eq!(t.to_commit(), [(1, 4)], "4 is not finished");
        t.finish(1, e, 4);
        assert_eq!(t.to_commit(), [(1, 6)]);
        t.consumer_position(1, 3);
        assert_eq!(t.to_commit(), [], "a position never goes back");
    }

    #[test]
    fn a_late_finish_from_an_old_epoch_is_ignored() {
        let mut t = Tracker::default();
        let old = t.assign(3);
        t.received(3, 7);
        assert_eq!(t.revoke(3), Some(7));
        assert_eq!(t.received(3, 8), None, "not ours");
        let new = t.assign(3);
        t.received(3, 7);
        t.finish(3, old, 7);
        assert_eq!(
            t.to_commit(),
            [(3, 7)],
            "the old epoch's finish does not count"
        );
        t.finish(3, new, 7);
        assert_eq!(t.to_commit(), [(3, 8)]);
        assert_eq!(t.revoke(3), None, "already committed");
    }

    proptest! {
        /// Whatever order sends finish in, the committed position never
        /// passes an unfinished offset and ends one past the last.
        #[test]
        fn never_past_an_unfinished_offset(order in Just((0..40i64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = Tracker::default();
            let e = t.assign(0);
            for o in 0..40 {
                t.received(0, o);
            }
            let mut finished = BTreeSet::new();
            for o in order {
                t.finish(0, e, o);
                finished.insert(o);
                for (_, pos) in t.to_commit() {
                    prop_assert!((0..pos).all(|x| finished.contains(&x)));
                    prop_assert!(!finished.contains(&pos) || pos == 40);
                }
            }
            prop_assert_eq!(t.positions(), vec![(0, 40)]);
        }
    }
}
