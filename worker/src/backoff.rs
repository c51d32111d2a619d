//! Exponential backoff between attempts to reach the master.

use std::time::Duration;

/// Delays that start at `first` and double up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
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
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(b.peek(), Duration::from_millis(100));
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert!(b.at_max());
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        assert!(!b.at_max());
    }
}
