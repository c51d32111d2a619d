//! Exponential backoff with jitter between attempts to reach the master:
//! `backon`'s delays, drawn one ahead so the log can say when the next
//! attempt comes. The jitter keeps a fleet of workers from reconnecting to a
//! restarted master in lockstep.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays that start at `first` and double up to `max`, each plus a random
/// part of up to itself.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    max: Duration,
    delays: ExponentialBackoff,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(first)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times()
            .with_jitter();
        let mut delays = builder.build();
        let next = delays.next().unwrap_or(max);
        Self {
            builder,
            max,
            delays,
            next,
        }
    }

    /// The delay before the next attempt; each call draws the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.delays.next().unwrap_or(self.max);
        delay
    }

    /// The delay [`Self::next_delay`] will return.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Whether the delays have reached their maximum (a long outage).
    pub fn at_max(&self) -> bool {
        self.next >= self.max
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
        self.next = self.delays.next().unwrap_or(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_maximum_and_resets() {
        let ms = |d: Duration| d.as_millis() as u64;
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert!((100..=200).contains(&ms(b.peek())), "{:?}", b.peek());
        let delays: Vec<u64> = (0..9).map(|_| ms(b.next_delay())).collect();
        // Each base delay (100, 200, ..., 3200, then 5000) plus up to itself.
        for (d, base) in delays
            .iter()
            .zip([100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000])
        {
            assert!(
                (base..=2 * base).contains(d),
                "{d} ms for a base of {base}: {delays:?}"
            );
        }
        assert!(b.at_max());
        b.reset();
        assert!(ms(b.next_delay()) <= 200);
        assert!(!b.at_max());
    }
}
