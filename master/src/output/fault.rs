//! Fault injection for the tests (`tests/tests/producer_failure.rs`): a
//! fatal producer error, or a call that never returns, at the Nth commit.

use rdkafka::producer::Producer;
use tracing::warn;

use super::watchdog::STUCK_CALL;
use super::Output;

/// Fault injection for the tests: with `CYBERDAY_FAULT_FATAL_AT_COMMIT=N`,
/// librdkafka raises a fatal error in the producer just before its Nth
/// commit, as it does when it loses an idempotence sequence.
pub const FAULT_FATAL_AT_COMMIT: &str = "CYBERDAY_FAULT_FATAL_AT_COMMIT";

/// Fault injection for the tests: with `CYBERDAY_FAULT_STUCK_AT_COMMIT=N`,
/// adding the offsets to the Nth commit's transaction blocks, as librdkafka
/// can when the group coordinator's broker goes away.
pub const FAULT_STUCK_AT_COMMIT: &str = "CYBERDAY_FAULT_STUCK_AT_COMMIT";

/// The commit named by the environment variable `var`, if set.
pub(super) fn at(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.parse().ok())
}

/// Blocks as a call that never returns would ([`FAULT_STUCK_AT_COMMIT`]):
/// far longer than the watchdog waits.
pub(super) fn block() {
    std::thread::sleep(STUCK_CALL * 20);
}

impl Output {
    /// Makes librdkafka raise a fatal error in the producer
    /// ([`FAULT_FATAL_AT_COMMIT`]).
    pub(super) fn inject_fatal(&self) {
        warn!(
            commit = self.commits,
            "{FAULT_FATAL_AT_COMMIT}: injecting a fatal producer error"
        );
        let reason = c"fault injected by CYBERDAY_FAULT_FATAL_AT_COMMIT";
        // SAFETY: the client pointer is valid while `self.producer` lives,
        // and librdkafka copies the reason.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }
}
