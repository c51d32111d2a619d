//! The topics the output writes to, created when absent.

use anyhow::Context;
use common::cli::KafkaArgs;

/// The topics the output reads from and writes to.
#[derive(Debug, Clone)]
pub struct Topics {
    /// The input topic, whose offsets are committed.
    pub input: String,
    pub notifications: String,
    pub dlq: String,
}

impl Topics {
    /// Creates the dead-letter and notifications topics where they are
    /// missing, with `partitions` partitions (the input's).
    pub async fn ensure(&self, kafka: &KafkaArgs, partitions: usize) -> anyhow::Result<()> {
        for (what, name) in [
            ("dead-letter", &self.dlq),
            ("notifications", &self.notifications),
        ] {
            common::kafka::ensure_topic(kafka, name, partitions as i32)
                .await
                .with_context(|| format!("preparing the {what} topic {name}"))?;
        }
        Ok(())
    }
}
