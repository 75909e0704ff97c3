//! Switchyard config service: the versioned [`store`], the gRPC handlers ([`service`]), the
//! watch fan-out ([`hub`]), the client inventory ([`clients`]), [`metrics`], the admin HTTP
//! port with the web [`dashboard`], and the [`server`] wiring.
//! The `switchyard` binary adds the operator CLI on top.

pub mod auth;
pub mod clients;
pub mod dashboard;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod migration;
pub mod movetopic;
pub mod output;
pub mod properties;
pub mod server;
pub mod service;
pub mod store;
pub mod tokens;

pub use error::ServiceError;
pub use server::{RunningServer, ServerConfig, StoreConfig, start};
pub use service::ConfigService;

pub use switchyard_proto::{client, desired};
