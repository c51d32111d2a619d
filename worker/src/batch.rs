//! Per-partition batching of results, in offset order.
//!
//! A partition's results wait here until they go out as one
//! [`ResultBatch`]: when `max_records` of them are ready, when adding one
//! more would pass `max_bytes` (encoded), when the oldest has waited
//! `linger`, or when the caller has nothing more to add for now
//! ([`Batcher::flush_all`]). A single result larger than `max_bytes` (an
//! invalid record carried whole) goes alone.
//!
//! Pure: no I/O, the caller passes the time.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use common::pb::{RecordResult, ResultBatch};
use prost::Message;
use tokio::time::Instant;

/// The default bound on a batch's encoded size: well under the master's
/// limit on one message, big enough that ordinary results never reach it.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Unsent results of every open partition.
#[derive(Debug)]
pub struct Batcher {
    max_records: usize,
    max_bytes: usize,
    linger: Duration,
    partitions: BTreeMap<i32, Unsent>,
}

#[derive(Debug)]
struct Unsent {
    /// Generation of the assignment the results were read under.
    generation: u64,
    entries: VecDeque<Entry>,
    /// Encoded size of `entries`.
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    result: RecordResult,
    added: Instant,
    bytes: usize,
}

/// What one result adds to an encoded batch: the result and its field's
/// tag and length prefix.
pub fn encoded_size(result: &RecordResult) -> usize {
    let len = result.encoded_len();
    len + 1 + prost::encoding::encoded_len_varint(len as u64)
}

impl Unsent {
    /// Whether a full batch (by count or by size) is waiting.
    fn full(&self, max_records: usize, max_bytes: usize) -> bool {
        self.entries.len() >= max_records || self.bytes > max_bytes
    }

    /// How many results from the front make the next batch: at most
    /// `max_records`, within `max_bytes` unless the first alone is larger.
    fn next_batch_len(&self, max_records: usize, max_bytes: usize) -> usize {
        let mut bytes = 0;
        let mut n = 0;
        for e in self.entries.iter().take(max_records) {
            if n > 0 && bytes + e.bytes > max_bytes {
                break;
            }
            bytes += e.bytes;
            n += 1;
        }
        n
    }
}

impl Batcher {
    /// `max_records` and `max_bytes` below one are taken as one.
    pub fn new(max_records: usize, max_bytes: usize, linger: Duration) -> Self {
        Self {
            max_records: max_records.max(1),
            max_bytes: max_bytes.max(1),
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
                bytes: 0,
            },
        );
    }

    /// Stops batching `partition`, discarding its unsent results; returns the
    /// offset of the first one discarded.
    pub fn close(&mut self, partition: i32) -> Option<i64> {
        let unsent = self.partitions.remove(&partition)?;
        unsent.entries.front().map(|e| e.result.offset)
    }

    /// Adds the next result of `partition`. Returns false, dropping the
    /// result, if the partition is not open.
    pub fn push(&mut self, partition: i32, result: RecordResult, now: Instant) -> bool {
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
        let bytes = encoded_size(&result);
        unsent.bytes += bytes;
        unsent.entries.push_back(Entry {
            result,
            added: now,
            bytes,
        });
        true
    }

    /// The batches of `partition` that are due at `now`: full ones (by count
    /// or size), and what waits when the oldest has waited `linger`.
    pub fn take_due(&mut self, partition: i32, now: Instant) -> Vec<ResultBatch> {
        let (max, max_bytes, linger) = (self.max_records, self.max_bytes, self.linger);
        let mut out = Vec::new();
        if let Some(unsent) = self.partitions.get_mut(&partition) {
            loop {
                let lingered = unsent
                    .entries
                    .front()
                    .is_some_and(|e| now.duration_since(e.added) >= linger);
                if !(unsent.full(max, max_bytes) || lingered) {
                    break;
                }
                // A full batch may leave a partial one behind: the next
                // round sends it only if it is full or has lingered too.
                let n = unsent.next_batch_len(max, max_bytes);
                out.push(take(partition, unsent, n));
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

    /// Every result of `partition`, whatever its age, in bounded batches
    /// (for a revoke or a shutdown).
    pub fn flush(&mut self, partition: i32) -> Vec<ResultBatch> {
        let (max, max_bytes) = (self.max_records, self.max_bytes);
        let mut out = Vec::new();
        if let Some(unsent) = self.partitions.get_mut(&partition) {
            while !unsent.entries.is_empty() {
                let n = unsent.next_batch_len(max, max_bytes);
                out.push(take(partition, unsent, n));
            }
        }
        out
    }

    /// Every unsent result of every partition, whatever its age, in bounded
    /// batches.
    pub fn flush_all(&mut self) -> Vec<ResultBatch> {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        partitions.into_iter().flat_map(|p| self.flush(p)).collect()
    }

    /// Whether any partition has a result not sent yet.
    pub fn has_unsent(&self) -> bool {
        self.partitions.values().any(|u| !u.entries.is_empty())
    }

    /// When the oldest result of some partition will have waited `linger`;
    /// `None` if nothing is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.partitions
            .values()
            .filter_map(|u| u.entries.front())
            .map(|e| e.added + self.linger)
            .min()
    }

    /// Results of `partition` not sent yet.
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
}

fn take(partition: i32, unsent: &mut Unsent, n: usize) -> ResultBatch {
    let results: Vec<RecordResult> = unsent
        .entries
        .drain(..n)
        .map(|e| {
            unsent.bytes -= e.bytes;
            e.result
        })
        .collect();
    ResultBatch {
        partition,
        generation: unsent.generation,
        results,
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

    /// An invalid result carrying a record of `len` bytes.
    fn carrying(offset: i64, len: usize) -> RecordResult {
        RecordResult {
            outcome: Outcome::Invalid as i32,
            invalid_code: "oversized".into(),
            value: Some(vec![b'x'; len]),
            ..result(offset)
        }
    }

    fn offsets(batch: &ResultBatch) -> Vec<i64> {
        batch.results.iter().map(|r| r.offset).collect()
    }

    fn encoded(batch: &ResultBatch) -> usize {
        batch.encoded_len()
    }

    #[test]
    fn a_full_batch_goes_at_once() {
        let now = Instant::now();
        let mut b = Batcher::new(3, MAX_BATCH_BYTES, LINGER);
        b.open(0, 7);
        for o in 0..2 {
            b.push(0, result(o), now);
            assert!(b.take_due(0, now).is_empty(), "sent before full");
        }
        b.push(0, result(2), now);
        let due = b.take_due(0, now);
        assert_eq!(due.len(), 1);
        assert_eq!(offsets(&due[0]), [0, 1, 2]);
        assert_eq!((due[0].partition, due[0].generation), (0, 7));
        assert_eq!(b.unsent(0), 0);
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn a_batch_goes_before_a_result_would_pass_the_byte_bound() {
        let now = Instant::now();
        let mut b = Batcher::new(100, 10_000, LINGER);
        b.open(0, 1);
        // Four results of a bit over 3,000 bytes: three fit, the fourth
        // would pass the bound, so the three go and the fourth waits.
        for o in 0..3 {
            b.push(0, carrying(o, 3_000), now);
            assert!(b.take_due(0, now).is_empty());
        }
        b.push(0, carrying(3, 3_000), now);
        let due = b.take_due(0, now);
        assert_eq!(due.iter().map(offsets).collect::<Vec<_>>(), [vec![0, 1, 2]]);
        assert!(encoded(&due[0]) <= 10_000, "{}", encoded(&due[0]));
        assert_eq!(b.first_unsent(0), Some(3));
        // It goes after its linger.
        let due = b.take_due(0, now + LINGER);
        assert_eq!(due.iter().map(offsets).collect::<Vec<_>>(), [vec![3]]);
    }

    #[test]
    fn a_result_bigger_than_the_bound_goes_alone() {
        let now = Instant::now();
        let mut b = Batcher::new(100, 10_000, LINGER);
        b.open(0, 1);
        b.push(0, result(0), now);
        b.push(0, carrying(1, 50_000), now);
        b.push(0, result(2), now);
        let due = b.take_due(0, now);
        assert_eq!(
            due.iter().map(offsets).collect::<Vec<_>>(),
            [vec![0], vec![1]],
            "what came before goes, then the big one alone"
        );
        assert_eq!(b.first_unsent(0), Some(2));
        let flushed = b.flush(0);
        assert_eq!(flushed.iter().map(offsets).collect::<Vec<_>>(), [vec![2]]);
    }

    #[test]
    fn flush_all_takes_every_partition_whatever_its_age() {
        let now = Instant::now();
        let mut b = Batcher::new(2, MAX_BATCH_BYTES, LINGER);
        b.open(0, 1);
        b.open(3, 1);
        b.open(5, 1);
        assert!(!b.has_unsent());
        for o in 0..3 {
            b.push(0, result(o), now);
        }
        b.push(3, result(7), now);
        assert!(b.has_unsent());
        let flushed = b.flush_all();
        assert_eq!(
            flushed
                .iter()
                .map(|x| (x.partition, offsets(x)))
                .collect::<Vec<_>>(),
            [(0, vec![0, 1]), (0, vec![2]), (3, vec![7])],
            "bounded batches, in partition and offset order"
        );
        assert!(!b.has_unsent());
        assert_eq!(b.next_deadline(), None);
        assert!(b.flush_all().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_goes_after_the_linger() {
        let mut b = Batcher::new(100, MAX_BATCH_BYTES, LINGER);
        b.open(4, 1);
        b.push(4, result(10), Instant::now());
        tokio::time::advance(Duration::from_millis(3)).await;
        b.push(4, result(11), Instant::now());
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
        let mut b = Batcher::new(2, MAX_BATCH_BYTES, LINGER);
        b.open(0, 3);
        b.open(1, 9);
        let now = Instant::now();
        b.push(0, result(100), now);
        b.push(1, result(5), now);
        b.push(1, result(6), now);
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

    #[test]
    fn flush_sends_everything_in_bounded_batches() {
        let now = Instant::now();
        let mut b = Batcher::new(2, MAX_BATCH_BYTES, Duration::from_secs(3600));
        b.open(2, 5);
        for o in 0..5 {
            // Pushing without taking: the caller may flush right away.
            b.push(2, result(o), now);
        }
        let flushed = b.flush(2);
        assert_eq!(
            flushed.iter().map(offsets).collect::<Vec<_>>(),
            [vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(b.unsent(2), 0);
        b.push(2, result(5), now);
        assert_eq!(b.close(2), Some(5), "first discarded offset");
        assert_eq!(b.close(2), None);
        assert!(!b.push(2, result(9), now), "closed partition");
    }

    #[test]
    fn reopening_discards_the_old_assignment() {
        let now = Instant::now();
        let mut b = Batcher::new(10, MAX_BATCH_BYTES, LINGER);
        b.open(0, 1);
        b.push(0, result(0), now);
        b.open(0, 2);
        assert_eq!(b.unsent(0), 0);
        b.push(0, result(0), now);
        let due = b.take_all_due(now + LINGER);
        assert_eq!(due[0].generation, 2);
    }

    proptest! {
        /// Whatever the mix of sizes and timings, each result goes out
        /// exactly once, in offset order, in batches no larger than the
        /// maximum count, and within the byte bound unless alone.
        #[test]
        fn every_result_goes_out_once_in_order_and_bounded(
            max in 1usize..6,
            max_bytes in 100usize..2_000,
            steps in prop::collection::vec((0u64..8, 0usize..1_500), 1..80),
        ) {
            let start = Instant::now();
            let mut now = start;
            let mut b = Batcher::new(max, max_bytes, LINGER);
            b.open(0, 1);
            let mut sent = Vec::new();
            let check = |batch: &ResultBatch| -> Result<(), TestCaseError> {
                prop_assert!(!batch.results.is_empty());
                prop_assert!(batch.results.len() <= max);
                let size: usize = batch.results.iter().map(encoded_size).sum();
                prop_assert!(
                    batch.results.len() == 1 || size <= max_bytes,
                    "{} results, {size} bytes", batch.results.len()
                );
                Ok(())
            };
            for (offset, (gap_ms, len)) in steps.iter().enumerate() {
                now += Duration::from_millis(*gap_ms);
                b.push(0, carrying(offset as i64, *len), now);
                for batch in b.take_due(0, now) {
                    check(&batch)?;
                    sent.extend(offsets(&batch));
                }
            }
            for batch in b.flush(0) {
                check(&batch)?;
                sent.extend(offsets(&batch));
            }
            let expected: Vec<i64> = (0..steps.len() as i64).collect();
            prop_assert_eq!(sent, expected);
            prop_assert_eq!(b.unsent(0), 0);
        }
    }
}
