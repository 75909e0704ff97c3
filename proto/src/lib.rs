//! The Switchyard gRPC contract, package `switchyard.v1`.
//!
//! [`v1`] holds the messages, the `MetadataService` and `AdminService` clients and servers.
//! [`shared_watch`] holds a `MetadataService` server whose watch events are pre-encoded
//! ([`EncodedWatchEvent`]), letting a server encode each version once for every watcher.

mod encoded;

pub use encoded::EncodedWatchEvent;

/// Messages and services of `switchyard.v1`.
#[allow(
    missing_docs,
    clippy::all,
    missing_debug_implementations,
    rust_2018_idioms
)]
pub mod v1 {
    tonic::include_proto!("switchyard.v1");
}

/// A `MetadataService` server whose `Watch` stream carries pre-encoded [`EncodedWatchEvent`]s.
/// The wire format is identical to [`v1::metadata_service_server`].
#[allow(
    missing_docs,
    clippy::all,
    missing_debug_implementations,
    rust_2018_idioms,
    dead_code
)]
pub mod shared_watch {
    include!(concat!(env!("OUT_DIR"), "/shared/switchyard.v1.rs"));
}

/// Encoded `FileDescriptorSet` of `switchyard.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_v1_descriptor.bin"));

pub mod client;
pub mod desired;
pub mod scope;
pub mod secrets;
pub mod state;
pub mod validate;
