//! Per-partition batching of results, in offset order.
//!
//! A partition's results wait here until they go out as one
//! [`ResultBatch`]: when `max_records` of them are ready, or when the oldest
//! has waited `linger`. A result may be held back (an invalid record whose
//! dead-letter write is not confirmed yet); it and everything after it in
//! its partition wait until it is confirmed, so the stream never reports an
//! offset out of order or an invalid record the dead-letter topic lacks.
//!
//! Pure: no I/O, the caller passes the time.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use common::pb::{RecordResult, ResultBatch};
use tokio::time::Instant;

/// Unsent results of every open partition.
#[derive(Debug)]
pub struct Batcher {
    max_records: usize,
    linger: Duration,
    partitions: BTreeMap<i32, Unsent>,
}

#[derive(Debug)]
struct Unsent {
    /// Generation of the assignment the results were read under.
    generation: u64,
    entries: VecDeque<Entry>,
    /// How many entries are held back.
    held: usize,
}

#[derive(Debug)]
struct Entry {
    result: RecordResult,
    added: Instant,
    confirmed: bool,
}

impl Unsent {
    /// How many results from the front may go out now.
    fn ready(&self) -> usize {
        if self.held == 0 {
            self.entries.len()
        } else {
            self.entries.iter().take_while(|e| e.confirmed).count()
        }
    }
}

impl Batcher {
    /// `max_records` below one is taken as one.
    pub fn new(max_records: usize, linger: Duration) -> Self {
        Self {
            max_records: max_records.max(1),
            linger,
            partitions: BTreeMap::new(),
        }
    }

    pub fn max_records(&self) -> usize {
        self.max_records
    }

    /// Starts batching `partition` under `generation`, discarding anything
    /// left from an earlier assignment of it.
    pub fn open(&mut self, partition: i32, generation: u64) {
        self.partitions.insert(
            partition,
            Unsent {
                generation,
                entries: VecDeque::new(),
                held: 0,
            },
        );
    }

    /// Stops batching `partition`, discarding its unsent results; returns the
    /// offset of the first one discarded.
    pub fn close(&mut self, partition: i32) -> Option<i64> {
        let unsent = self.partitions.remove(&partition)?;
        unsent.entries.front().map(|e| e.result.offset)
    }

    /// Adds the next result of `partition`. `confirmed == false` holds it
    /// (and every later result of the partition) back until [`Self::confirm`].
    /// Returns false, dropping the result, if the partition is not open.
    pub fn push(
        &mut self,
        partition: i32,
        result: RecordResult,
        confirmed: bool,
        now: Instant,
    ) -> bool {
        let Some(unsent) = self.partitions.get_mut(&partition) else {
            return false;
        };
        debug_assert!(
            unsent
                .entries
                .back()
                .is_none_or(|e| e.result.offset < result.offset),
            "results must be pushed in offset order"
        );
        unsent.entries.push_back(Entry {
            result,
            added: now,
            confirmed,
        });
        if !confirmed {
            unsent.held += 1;
        }
        true
    }

    /// Releases the held-back result at `offset` of `partition`, if the
    /// partition is still open under `generation`. Returns whether it was found.
    pub fn confirm(&mut self, partition: i32, generation: u64, offset: i64) -> bool {
        let Some(unsent) = self.partitions.get_mut(&partition) else {
            return false;
        };
        if unsent.generation != generation {
            return false;
        }
        // Entries are in offset order.
        match unsent
            .entries
            .binary_search_by_key(&offset, |e| e.result.offset)
        {
            Ok(i) if !unsent.entries[i].confirmed => {
                unsent.entries[i].confirmed = true;
                unsent.held -= 1;
                true
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// The batches of `partition` that are due at `now`: full ones, and the
    /// ready results when the oldest has waited `linger`.
    pub fn take_due(&mut self, partition: i32, now: Instant) -> Vec<ResultBatch> {
        let (max, linger) = (self.max_records, self.linger);
        let mut out = Vec::new();
        if let Some(unsent) = self.partitions.get_mut(&partition) {
            loop {
                let ready = unsent.ready();
                let lingered = unsent
                    .entries
                    .front()
                    .is_some_and(|e| now.duration_since(e.added) >= linger);
                if ready >= max {
                    out.push(take(partition, unsent, max));
                } else if ready > 0 && lingered {
                    out.push(take(partition, unsent, ready));
                } else {
                    break;
                }
            }
        }
        out
    }

    /// [`Self::take_due`] for every partition.
    pub fn take_all_due(&mut self, now: Instant) -> Vec<ResultBatch> {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        partitions
            .into_iter()
            .flat_map(|p| self.take_due(p, now))
            .collect()
    }

    /// Every ready result of `partition`, whatever its age, in batches of at
    /// most `max_records` (for a revoke or a shutdown).
    pub fn flush(&mut self, partition: i32) -> Vec<ResultBatch> {
        let max = self.max_records;
        let mut out = Vec::new();
        if let Some(unsent) = self.partitions.get_mut(&partition) {
            loop {
                let n = unsent.ready().min(max);
                if n == 0 {
                    break;
                }
                out.push(take(partition, unsent, n));
            }
        }
        out
    }

    /// When the oldest ready result of some partition will have waited
    /// `linger`; `None` if nothing is waiting on time alone.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.partitions
            .values()
            .filter_map(|u| u.entries.front().filter(|e| e.confirmed))
            .map(|e| e.added + self.linger)
            .min()
    }

    /// Results of `partition` not sent yet, ready or held back.
    pub fn unsent(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |u| u.entries.len())
    }

    /// Offset of the first unsent result of `partition`: every result before
    /// it has gone out.
    pub fn first_unsent(&self, partition: i32) -> Option<i64> {
        self.partitions
            .get(&partition)?
            .entries
            .front()
            .map(|e| e.result.offset)
    }

    /// Whether `partition` has a result held back.
    pub fn is_held(&self, partition: i32) -> bool {
        self.partitions.get(&partition).is_some_and(|u| u.held > 0)
    }
}

fn take(partition: i32, unsent: &mut Unsent, n: usize) -> ResultBatch {
    ResultBatch {
        partition,
        generation: unsent.generation,
        results: unsent.entries.drain(..n).map(|e| e.result).collect(),
    }
}

#[cfg(test)]
mod tests {
    use common::pb::Outcome;
    use proptest::prelude::*;

    use super::*;

    const LINGER: Duration = Duration::from_millis(5);

    fn result(offset: i64) -> RecordResult {
        RecordResult {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset,
            outcome: Outcome::NoPurchase as i32,
            ..Default::default()
        }
    }

    fn offsets(batch: &ResultBatch) -> Vec<i64> {
        batch.results.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_full_batch_goes_at_once() {
        let now = Instant::now();
        let mut b = Batcher::new(3, LINGER);
        b.open(0, 7);
        for o in 0..2 {
            b.push(0, result(o), true, now);
            assert!(b.take_due(0, now).is_empty(), "sent before full");
        }
        b.push(0, result(2), true, now);
        let due = b.take_due(0, now);
        assert_eq!(due.len(), 1);
        assert_eq!(offsets(&due[0]), [0, 1, 2]);
        assert_eq!((due[0].partition, due[0].generation), (0, 7));
        assert_eq!(b.unsent(0), 0);
        assert_eq!(b.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_goes_after_the_linger() {
        let mut b = Batcher::new(100, LINGER);
        b.open(4, 1);
        b.push(4, result(10), true, Instant::now());
        tokio::time::advance(Duration::from_millis(3)).await;
        b.push(4, result(11), true, Instant::now());
        assert!(b.take_due(4, Instant::now()).is_empty());

        // The deadline follows the oldest result, not the newest.
        let deadline = b.next_deadline().expect("a deadline");
        tokio::time::sleep_until(deadline).await;
        assert_eq!(Instant::now().duration_since(deadline), Duration::ZERO);
        let due = b.take_all_due(Instant::now());
        assert_eq!(due.len(), 1);
        assert_eq!(offsets(&due[0]), [10, 11]);
        assert_eq!(b.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_are_batched_separately_with_their_generation() {
        let mut b = Batcher::new(2, LINGER);
        b.open(0, 3);
        b.open(1, 9);
        let now = Instant::now();
        b.push(0, result(100), true, now);
        b.push(1, result(5), true, now);
        b.push(1, result(6), true, now);
        // Partition 1 is full; partition 0's one result must wait.
        let due: Vec<_> = [0, 1]
            .into_iter()
            .flat_map(|p| b.take_due(p, now))
            .collect();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].partition, due[0].generation), (1, 9));
        assert_eq!(offsets(&due[0]), [5, 6]);

        tokio::time::advance(LINGER).await;
        let due = b.take_all_due(Instant::now());
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].partition, due[0].generation), (0, 3));
        assert_eq!(offsets(&due[0]), [100]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_result_holds_back_the_rest_of_its_partition() {
        let mut b = Batcher::new(2, LINGER);
        b.open(0, 1);
        let now = Instant::now();
        b.push(0, result(0), true, now);
        b.push(0, result(1), false, now); // dead-letter write in flight
        b.push(0, result(2), true, now);
        b.push(0, result(3), true, now);
        tokio::time::advance(LINGER * 10).await;
        let now = Instant::now();
        // Only what precedes the held result may go.
        let due = b.take_due(0, now);
        assert_eq!(due.iter().map(offsets).collect::<Vec<_>>(), [vec![0]]);
        assert!(b.is_held(0));
        assert_eq!(b.first_unsent(0), Some(1));
        assert_eq!(b.next_deadline(), None, "nothing waits on time alone");
        assert!(b.flush(0).is_empty());

        assert!(!b.confirm(0, 2, 1), "another generation's confirmation");
        assert!(b.confirm(0, 1, 1));
        assert!(!b.is_held(0));
        let due = b.take_due(0, now);
        assert_eq!(
            due.iter().map(offsets).collect::<Vec<_>>(),
            [vec![1, 2], vec![3]]
        );
        assert_eq!(b.first_unsent(0), None);
    }

    #[test]
    fn flush_sends_everything_ready_in_bounded_batches() {
        let now = Instant::now();
        let mut b = Batcher::new(2, Duration::from_secs(3600));
        b.open(2, 5);
        for o in 0..5 {
            // Pushing without taking: the caller may flush right away.
            b.push(2, result(o), o != 3, now);
        }
        let flushed = b.flush(2);
        assert_eq!(
            flushed.iter().map(offsets).collect::<Vec<_>>(),
            [vec![0, 1], vec![2]]
        );
        assert_eq!(b.unsent(2), 2);
        assert_eq!(b.close(2), Some(3), "first discarded offset");
        assert_eq!(b.close(2), None);
        assert!(!b.push(2, result(9), true, now), "closed partition");
    }

    #[test]
    fn reopening_discards_the_old_assignment() {
        let now = Instant::now();
        let mut b = Batcher::new(10, LINGER);
        b.open(0, 1);
        b.push(0, result(0), true, now);
        b.open(0, 2);
        assert_eq!(b.unsent(0), 0);
        b.push(0, result(0), true, now);
        let due = b.take_all_due(now + LINGER);
        assert_eq!(due[0].generation, 2);
    }

    proptest! {
        /// Whatever the mix of sizes, timings and held results, each result
        /// goes out exactly once, in offset order, in batches no larger than
        /// the maximum, and never ahead of a held one.
        #[test]
        fn every_result_goes_out_once_in_order(
            max in 1usize..6,
            steps in prop::collection::vec((0u64..8, any::<bool>(), any::<bool>()), 1..80),
        ) {
            let start = Instant::now();
            let mut now = start;
            let mut b = Batcher::new(max, LINGER);
            b.open(0, 1);
            let mut sent = Vec::new();
            let mut held = Vec::new();
            for (offset, (gap_ms, confirmed, release)) in steps.iter().enumerate() {
                now += Duration::from_millis(*gap_ms);
                b.push(0, result(offset as i64), *confirmed, now);
                if !confirmed {
                    held.push(offset as i64);
                }
                if *release && !held.is_empty() {
                    let o = held.remove(0);
                    prop_assert!(b.confirm(0, 1, o));
                }
                for batch in b.take_due(0, now) {
                    prop_assert!(batch.results.len() <= max);
                    prop_assert!(!batch.results.is_empty());
                    for r in &batch.results {
                        prop_assert!(!held.contains(&r.offset), "held result {} sent", r.offset);
                    }
                    sent.extend(offsets(&batch));
                }
            }
            for o in held.drain(..) {
                prop_assert!(b.confirm(0, 1, o));
            }
            for batch in b.flush(0) {
                prop_assert!(batch.results.len() <= max);
                sent.extend(offsets(&batch));
            }
            let expected: Vec<i64> = (0..steps.len() as i64).collect();
            prop_assert_eq!(sent, expected);
            prop_assert_eq!(b.unsent(0), 0);
        }
    }
}
