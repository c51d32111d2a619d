//! The worker's one Kafka consumer and the partitions it owns.
//!
//! Partitions come and go one by one with `incremental_assign` /
//! `incremental_unassign` at the offsets the master gives; the consumer never
//! subscribes and never commits (offsets belong to the master). For each
//! owned partition this keeps the assignment's generation and the next
//! offset to read.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::Arc;

use common::cli::KafkaArgs;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

/// One partition this worker owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub topic: String,
    pub generation: u64,
    /// Next offset to read: one past the last record taken, or the start
    /// offset. Negative while it is a logical one (beginning, end).
    pub next_offset: i64,
}

/// The consumer and the partitions assigned to it.
pub struct Partitions {
    consumer: Arc<StreamConsumer>,
    owned: BTreeMap<i32, Owned>,
    /// Reading has stopped for good (shutdown): partitions are only tracked.
    stopped: bool,
}

impl Partitions {
    /// Creates the consumer, with no partition assigned. Must run inside the
    /// Tokio runtime.
    pub fn new(args: &KafkaArgs) -> KafkaResult<Self> {
        let config = common::kafka::worker_consumer_config(args);
        Ok(Self {
            consumer: Arc::new(config.create()?),
            owned: BTreeMap::new(),
            stopped: false,
        })
    }

    /// A handle on the consumer to receive records with.
    pub fn consumer(&self) -> Arc<StreamConsumer> {
        self.consumer.clone()
    }

    pub fn get(&self, partition: i32) -> Option<&Owned> {
        self.owned.get(&partition)
    }

    pub fn get_mut(&mut self, partition: i32) -> Option<&mut Owned> {
        self.owned.get_mut(&partition)
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, &Owned)> {
        self.owned.iter().map(|(p, o)| (*p, o))
    }

    pub fn is_empty(&self) -> bool {
        self.owned.is_empty()
    }

    /// Starts reading `partition` of `topic` at `start_offset` (after
    /// [`Self::stop_all`], only records it).
    pub fn assign(
        &mut self,
        topic: &str,
        partition: i32,
        start_offset: i64,
        generation: u64,
    ) -> KafkaResult<()> {
        if self.owned.contains_key(&partition) {
            self.unassign(partition)?;
        }
        if !self.stopped {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::from_raw(start_offset))?;
            self.consumer.incremental_assign(&tpl)?;
        }
        self.owned.insert(
            partition,
            Owned {
                topic: topic.to_owned(),
                generation,
                next_offset: start_offset,
            },
        );
        Ok(())
    }

    /// Stops reading `partition` and forgets it; records already fetched for
    /// it are discarded by the client.
    pub fn unassign(&mut self, partition: i32) -> KafkaResult<Option<Owned>> {
        let Some(owned) = self.owned.remove(&partition) else {
            return Ok(None);
        };
        if !self.stopped {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&owned.topic, partition);
            self.consumer.incremental_unassign(&tpl)?;
        }
        Ok(Some(owned))
    }

    /// Stops reading every partition for good but remembers them
    /// (shutdown: their positions still go into `leave`).
    pub fn stop_all(&mut self) -> KafkaResult<()> {
        self.stopped = true;
        self.consumer.unassign()
    }

    /// Stops reading and forgets every partition (the session ended).
    pub fn clear(&mut self) -> KafkaResult<()> {
        self.owned.clear();
        self.stopped = false;
        self.consumer.unassign()
    }

    /// The partition's high watermark as of the client's last fetch, without
    /// asking the brokers; -1 when not known yet.
    pub fn high_watermark(&self, partition: i32) -> i64 {
        let Some(owned) = self.owned.get(&partition) else {
            return -1;
        };
        let Ok(topic) = CString::new(owned.topic.as_str()) else {
            return -1;
        };
        let (mut low, mut high) = (-1i64, -1i64);
        // rust-rdkafka only wraps the query that goes to the brokers; the
        // cached variant is a plain lookup.
        // SAFETY: the client handle lives as long as `self.consumer`, `topic`
        // is a NUL-terminated string that outlives the call, and librdkafka
        // only writes the two out-parameters, which are valid `i64`s.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        if err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 {
            high
        } else {
            -1
        }
    }
}
