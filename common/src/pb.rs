//! Generated code for `proto/cyberday/v1` (package `cyberday.v1`): messages,
//! the `Coordinator` and `Admin` clients and servers, and the encoded file
//! descriptor set that server reflection serves. The only `include_proto!`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("cyberday.v1");

/// Encoded `FileDescriptorSet` of every cyberday.v1 proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("cyberday_v1_descriptor");

/// The metadata key by which a standby master names the leader in the
/// `unavailable` status it refuses a worker with (the leader's URL).
pub const LEADER_METADATA: &str = "cyberday-leader";
