//! # switchyard-c: the C API of the Switchyard SDK
//!
//! A C program gets the same routing, hot swap and delivery guarantees as a Rust one: every
//! call goes through the Rust SDK (`switchyard`), which runs on a small Tokio runtime owned by
//! the client handle. The header `include/switchyard.h` is generated from this crate by
//! cbindgen and checked in; `tests/header.rs` fails when it is stale.
//!
//! Conventions (after rustls-ffi):
//! - Objects are opaque pointers created by `switchyard_*_new` / `_connect` / `_from_file`
//!   and released by the matching `_free`; `_free(NULL)` does nothing.
//! - Fallible calls return a [`switchyard_result`]; the message of the last failure on the
//!   calling thread is read with `switchyard_last_error_message`.
//! - No call crashes on a NULL pointer or invalid UTF-8: they return an error code. Every entry
//!   point catches Rust panics and reports them as `SWITCHYARD_PANIC`.
//!
//! Unsafe code is confined to converting C arguments (pointers, lengths, strings) at the
//! boundary and handing boxed handles to and from C; each block says why it is sound.

// The C ABI needs raw pointers and `#[unsafe(no_mangle)]`; this crate alone opts out of the
// workspace's `unsafe_code = "deny"`.
#![allow(unsafe_code)]
// Type and constant names are the C names (`switchyard_client`, `SWITCHYARD_OK`), as in the
// header.
#![allow(non_camel_case_types)]

mod boundary;
mod client;
mod conf;
mod consumer;
mod error;
mod inflight;
mod message;
mod producer;

pub use client::{switchyard_client, switchyard_connect_options};
pub use conf::switchyard_conf;
pub use consumer::switchyard_consumer;
pub use error::switchyard_result;
pub use message::switchyard_message;
pub use producer::{
    SWITCHYARD_MAX_IN_FLIGHT, SWITCHYARD_NAME_MAX, switchyard_delivery,
    switchyard_delivery_callback, switchyard_header, switchyard_producer, switchyard_topic,
};
