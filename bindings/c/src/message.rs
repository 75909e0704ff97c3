//! `switchyard_message`: a received record, owned by the caller until
//! `switchyard_message_free`.

use std::ffi::{CString, c_char};

use switchyard::Message;

use crate::boundary::{arg_ref, from_handle, guard, guard_value};
use crate::error::Failure;
use crate::error::switchyard_result;

/// A record read from a logical topic. Every pointer obtained from it stays valid until it is
/// freed with `switchyard_message_free`.
#[derive(Debug)]
pub struct switchyard_message {
    pub(crate) msg: Message,
    /// The consumer that returned it (a commit must go to the same one).
    pub(crate) consumer_id: u64,
    topic: CString,
    cluster: CString,
    physical_topic: CString,
}

impl switchyard_message {
    pub(crate) fn new(msg: Message, consumer_id: u64) -> Self {
        // Names are validated topic and cluster names: they hold no NUL.
        let c = |s: &str| CString::new(s).unwrap_or_default();
        Self {
            topic: c(&msg.topic),
            cluster: c(&msg.cluster),
            physical_topic: c(&msg.physical_topic),
            msg,
            consumer_id,
        }
    }
}

/// # Safety
///
/// `m` is NULL or a live message.
unsafe fn msg<'a>(m: *const switchyard_message) -> Result<&'a switchyard_message, Failure> {
    // SAFETY: checked for NULL; liveness is the caller's contract.
    unsafe { arg_ref(m, "message") }
}

/// The logical topic the message was read from (NUL-terminated), or NULL when `message` is
/// NULL.
///
/// Thread safety: a message may be read from any thread, but not while another thread frees it.
///
/// # Safety
///
/// `message` must be NULL or a live message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_topic(
    message: *const switchyard_message,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: the caller's contract.
        Ok(unsafe { msg(message) }?.topic.as_ptr())
    })
}

/// The cluster the message was read from (NUL-terminated), or NULL when `message` is NULL.
///
/// Thread safety: as for `switchyard_message_topic`.
///
/// # Safety
///
/// `message` must be NULL or a live message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_cluster(
    message: *const switchyard_message,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: the caller's contract.
        Ok(unsafe { msg(message) }?.cluster.as_ptr())
    })
}

/// The physical topic on that cluster (NUL-terminated), or NULL when `message` is NULL.
///
/// Thread safety: as for `switchyard_message_topic`.
///
/// # Safety
///
/// `message` must be NULL or a live message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_physical_topic(
    message: *const switchyard_message,
) -> *const c_char {
    guard_value(std::ptr::null(), || {
        // SAFETY: the caller's contract.
        Ok(unsafe { msg(message) }?.physical_topic.as_ptr())
    })
}

/// The partition, or -1 when `message` is NULL.
///
/// Thread safety: as for `switchyard_message_topic`.
///
/// # Safety
///
/// `message` must be NULL or a live message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_partition(message: *const switchyard_message) -> i32 {
    guard_value(-1, || {
        // SAFETY: the caller's contract.
        Ok(unsafe { msg(message) }?.msg.partition)
    })
}

/// The offset, or -1 when `message` is NULL.
///
/// Thread safety: as for `switchyard_message_topic`.
///
/// # Safety
///
/// `message` must be NULL or a live message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_offset(message: *const switchyard_message) -> i64 {
    guard_value(-1, || {
        // SAFETY: the caller's contract.
        Ok(unsafe { msg(message) }?.msg.offset)
    })
}

/// The Kafka timestamp in milliseconds since the epoch, or -1 when the record has none or
/// `message` is NULL.
///
/// Thread safety: as for `switchyard_message_topic`.
///
/// # Safety
///
/// `message` must be NULL or a live message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_timestamp_ms(
    message: *const switchyard_message,
) -> i64 {
    guard_value(-1, || {
        // SAFETY: the caller's contract.
        Ok(unsafe { msg(message) }?.msg.timestamp_ms.unwrap_or(-1))
    })
}

/// The key: a pointer to `*len` bytes, or NULL (with `*len` = 0) when the record has no key or
/// `message` is NULL. `len` may be NULL when the length is not wanted.
///
/// Thread safety: as for `switchyard_message_topic`.
///
/// # Safety
///
/// `message` must be NULL or a live message; `len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_key(
    message: *const switchyard_message,
    len: *mut usize,
) -> *const u8 {
    // SAFETY: the caller's contract.
    unsafe { bytes_out(message, len, |m| m.key.as_deref()) }
}

/// The payload: a pointer to `*len` bytes, or NULL (with `*len` = 0) when the record has no
/// payload (a tombstone) or `message` is NULL. `len` may be NULL.
///
/// Thread safety: as for `switchyard_message_topic`.
///
/// # Safety
///
/// `message` must be NULL or a live message; `len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_payload(
    message: *const switchyard_message,
    len: *mut usize,
) -> *const u8 {
    // SAFETY: the caller's contract.
    unsafe { bytes_out(message, len, |m| m.payload.as_deref()) }
}

/// # Safety
///
/// `message` NULL or live; `len` NULL or writable.
unsafe fn bytes_out(
    message: *const switchyard_message,
    len: *mut usize,
    pick: impl FnOnce(&Message) -> Option<&[u8]>,
) -> *const u8 {
    let write_len = |n: usize| {
        if !len.is_null() {
            // SAFETY: not NULL and writable (the caller's contract).
            unsafe { *len = n };
        }
    };
    write_len(0);
    guard_value(std::ptr::null(), || {
        // SAFETY: the caller's contract.
        let m = unsafe { msg(message) }?;
        Ok(match pick(&m.msg) {
            Some(b) => {
                write_len(b.len());
                b.as_ptr()
            }
            None => std::ptr::null(),
        })
    })
}

/// Number of headers (0 when `message` is NULL).
///
/// Thread safety: as for `switchyard_message_topic`.
///
/// # Safety
///
/// `message` must be NULL or a live message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_header_count(
    message: *const switchyard_message,
) -> usize {
    guard_value(0, || {
        // SAFETY: the caller's contract.
        Ok(unsafe { msg(message) }?.msg.headers.len())
    })
}

/// Header number `index` (0-based, in record order): `*name`/`*name_len` receive its name (not
/// NUL-terminated), `*value`/`*value_len` its value. Any of the four out-pointers may be NULL
/// when not wanted. `SWITCHYARD_INVALID_ARGUMENT` when `index` is out of range.
///
/// Thread safety: as for `switchyard_message_topic`.
///
/// # Safety
///
/// `message` must be NULL or a live message; each out-pointer NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_header(
    message: *const switchyard_message,
    index: usize,
    name: *mut *const c_char,
    name_len: *mut usize,
    value: *mut *const u8,
    value_len: *mut usize,
) -> switchyard_result {
    guard(|| {
        // SAFETY: the caller's contract.
        let m = unsafe { msg(message) }?;
        let (k, v) = m.msg.headers.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "header index {index} is out of range (the message has {})",
                m.msg.headers.len()
            ))
        })?;
        // SAFETY (all four): each out-pointer is written only when not NULL, and it is then
        // writable by the caller's contract.
        unsafe {
            if !name.is_null() {
                *name = k.as_ptr().cast();
            }
            if !name_len.is_null() {
                *name_len = k.len();
            }
            if !value.is_null() {
                *value = v.as_ptr();
            }
            if !value_len.is_null() {
                *value_len = v.len();
            }
        }
        Ok(())
    })
}

/// Releases a message. NULL is a no-op.
///
/// Thread safety: call it once, when no other thread uses the message. It may be freed on any
/// thread, before or after its consumer.
///
/// # Safety
///
/// `message` must be NULL or a message not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_message_free(message: *mut switchyard_message) {
    guard_value((), || {
        // SAFETY: NULL or a handle from `into_handle`, freed once (the caller's contract).
        drop(unsafe { from_handle(message) });
        Ok(())
    })
}
