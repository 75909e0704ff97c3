//! Switchyard config service: the versioned store, the gRPC services and the server.
pub mod store;
