//! Result codes, the thread-local last error, and the functions that read them.

use std::cell::RefCell;
use std::ffi::{c_char, c_uint};

use switchyard::ErrorKind;

use crate::boundary::guard_value;

/// The outcome of a call. `SWITCHYARD_OK` is 0; every other value is a failure whose message is
/// available from `switchyard_last_error_message` on the same thread.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum switchyard_result {
    /// Success.
    SWITCHYARD_OK = 0,
    /// An argument is out of range, malformed or not valid UTF-8 (or the call is not allowed
    /// from where it was made, e.g. a blocking call inside a delivery callback).
    SWITCHYARD_INVALID_ARGUMENT = 1,
    /// A required pointer argument is NULL.
    SWITCHYARD_NULL_POINTER = 2,
    /// The logical topic is not in the configuration (or not allowed for this app).
    SWITCHYARD_UNKNOWN_TOPIC = 3,
    /// No configuration: the config service did not answer and there is no usable cache.
    SWITCHYARD_NO_CONFIG = 4,
    /// The config service could not be reached or answered with an error.
    SWITCHYARD_CONFIG_SERVICE = 5,
    /// The configuration file or last-known-good cache is unreadable or invalid.
    SWITCHYARD_CACHE = 6,
    /// Kafka returned an error.
    SWITCHYARD_KAFKA = 7,
    /// The operation did not complete in time (for `switchyard_consumer_poll`: no message
    /// within the timeout, which is not an error condition).
    SWITCHYARD_TIMEOUT = 8,
    /// The client, producer or consumer is shutting down; the outcome of a send reported with
    /// this code is unknown (it may or may not have been written).
    SWITCHYARD_CLOSED = 9,
    /// A quota with the REJECT policy refused the send.
    SWITCHYARD_QUOTA_EXCEEDED = 10,
    /// A bug: Rust code panicked. The message says where.
    SWITCHYARD_PANIC = 11,
    /// Any other failure.
    SWITCHYARD_INTERNAL = 12,
}

use switchyard_result::*;

/// The code for an SDK error kind.
pub(crate) fn code_of(kind: ErrorKind) -> switchyard_result {
    match kind {
        ErrorKind::InvalidArgument => SWITCHYARD_INVALID_ARGUMENT,
        ErrorKind::UnknownTopic => SWITCHYARD_UNKNOWN_TOPIC,
        ErrorKind::NoConfig => SWITCHYARD_NO_CONFIG,
        ErrorKind::ConfigService => SWITCHYARD_CONFIG_SERVICE,
        ErrorKind::Cache => SWITCHYARD_CACHE,
        ErrorKind::Kafka => SWITCHYARD_KAFKA,
        ErrorKind::Timeout => SWITCHYARD_TIMEOUT,
        ErrorKind::Closed => SWITCHYARD_CLOSED,
        ErrorKind::QuotaExceeded => SWITCHYARD_QUOTA_EXCEEDED,
        // `ErrorKind` is non-exhaustive: a kind added later reads as INTERNAL until it is
        // given a code here.
        _ => SWITCHYARD_INTERNAL,
    }
}

/// A failed call: its code, message and whether trying again may succeed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) code: switchyard_result,
    pub(crate) message: String,
    pub(crate) retriable: bool,
}

impl Failure {
    pub(crate) fn new(code: switchyard_result, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retriable: code_is_retriable(code),
        }
    }

    /// A NULL required pointer.
    pub(crate) fn null(what: &str) -> Self {
        Self::new(SWITCHYARD_NULL_POINTER, format!("{what} is NULL"))
    }

    /// A bad argument.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(SWITCHYARD_INVALID_ARGUMENT, message)
    }

    /// A caught panic.
    pub(crate) fn panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic payload".into());
        Self::new(SWITCHYARD_PANIC, format!("internal panic: {what}"))
    }
}

impl From<switchyard::Error> for Failure {
    fn from(e: switchyard::Error) -> Self {
        Self {
            code: code_of(e.kind()),
            message: e.to_string(),
            retriable: e.is_retriable(),
        }
    }
}

impl From<&switchyard::SendError> for Failure {
    fn from(e: &switchyard::SendError) -> Self {
        Self {
            code: code_of(e.kind()),
            message: e.error.to_string(),
            retriable: e.is_retriable(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<Failure>> = const { RefCell::new(None) };
}

/// Records `f` as the calling thread's last error.
pub(crate) fn set_last_error(f: Failure) {
    LAST_ERROR.with(|l| *l.borrow_mut() = Some(f));
}

fn code_is_retriable(code: switchyard_result) -> bool {
    matches!(
        code,
        SWITCHYARD_NO_CONFIG
            | SWITCHYARD_CONFIG_SERVICE
            | SWITCHYARD_TIMEOUT
            | SWITCHYARD_QUOTA_EXCEEDED
    )
}

/// Copies the message of the last failed call on the calling thread into `buf`.
///
/// At most `len - 1` bytes are written, followed by a NUL (a message is never cut inside a
/// UTF-8 character). `*out_len`, when `out_len` is not NULL, receives the full length of the
/// message without the NUL, so `*out_len >= len` means it was truncated; `buf` may be NULL when
/// `len` is 0 to ask for the length only. With no failure recorded yet the message is empty.
///
/// Messages are per thread and kept until the next failure on that thread (a successful call
/// does not clear them), like `errno`: read it right after a call returned non-OK. In a
/// delivery callback with a failure code, it holds that send's failure.
///
/// Returns `SWITCHYARD_NULL_POINTER` when `buf` is NULL and `len` is not 0; this function does
/// not change the last error itself.
///
/// Thread safety: may be called from any thread, including delivery callbacks.
///
/// # Safety
///
/// `buf` must be NULL or valid for writes of `len` bytes; `out_len` must be NULL or valid for
/// a write of one `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> switchyard_result {
    guard_value(SWITCHYARD_PANIC, || {
        let msg = LAST_ERROR.with(|l| {
            l.borrow()
                .as_ref()
                .map(|f| f.message.clone())
                .unwrap_or_default()
        });
        if !out_len.is_null() {
            // SAFETY: `out_len` is not NULL and the caller guarantees it is writable.
            unsafe { *out_len = msg.len() };
        }
        if len == 0 {
            return Ok(SWITCHYARD_OK);
        }
        if buf.is_null() {
            return Ok(SWITCHYARD_NULL_POINTER);
        }
        let mut n = msg.len().min(len - 1);
        while !msg.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: `buf` is valid for `len` bytes (caller contract) and `n + 1 <= len`; the
        // source is a live Rust string of at least `n` bytes that does not overlap `buf`.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
        Ok(SWITCHYARD_OK)
    })
}

/// Whether the last failed call on the calling thread may succeed if tried again later. More
/// precise than `switchyard_result_is_retriable` for `SWITCHYARD_KAFKA`, where it depends on
/// the Kafka error (e.g. a full queue or an unavailable leader is retriable, an authorization
/// failure is not). False when no failure has been recorded on this thread.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn switchyard_last_error_is_retriable() -> bool {
    guard_value(false, || {
        Ok(LAST_ERROR.with(|l| l.borrow().as_ref().is_some_and(|f| f.retriable)))
    })
}

/// Whether a failure with code `rc` may succeed if tried again later: true for
/// `SWITCHYARD_NO_CONFIG`, `SWITCHYARD_CONFIG_SERVICE`, `SWITCHYARD_TIMEOUT` and
/// `SWITCHYARD_QUOTA_EXCEEDED`. `SWITCHYARD_KAFKA` gives false here because it depends on the
/// Kafka error: use `switchyard_last_error_is_retriable` for that. Unknown values give false.
///
/// Takes an unsigned int rather than the enum so any value from C is safe to pass.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn switchyard_result_is_retriable(rc: c_uint) -> bool {
    guard_value(false, || Ok(from_raw(rc).is_some_and(code_is_retriable)))
}

/// The name of result code `rc` (`"SWITCHYARD_OK"`, ...), or `"SWITCHYARD_UNKNOWN_RESULT"`
/// for a value that is not a `switchyard_result`. The string is static: never free it.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn switchyard_result_name(rc: c_uint) -> *const c_char {
    let name = match from_raw(rc) {
        Some(code) => code.c_name(),
        None => "SWITCHYARD_UNKNOWN_RESULT\0",
    };
    name.as_ptr().cast()
}

/// Every code, in value order.
const ALL: [switchyard_result; 13] = [
    SWITCHYARD_OK,
    SWITCHYARD_INVALID_ARGUMENT,
    SWITCHYARD_NULL_POINTER,
    SWITCHYARD_UNKNOWN_TOPIC,
    SWITCHYARD_NO_CONFIG,
    SWITCHYARD_CONFIG_SERVICE,
    SWITCHYARD_CACHE,
    SWITCHYARD_KAFKA,
    SWITCHYARD_TIMEOUT,
    SWITCHYARD_CLOSED,
    SWITCHYARD_QUOTA_EXCEEDED,
    SWITCHYARD_PANIC,
    SWITCHYARD_INTERNAL,
];

/// The code with value `rc`, if there is one (C may pass any integer).
fn from_raw(rc: c_uint) -> Option<switchyard_result> {
    ALL.iter().copied().find(|c| *c as c_uint == rc)
}

impl switchyard_result {
    /// The C name, NUL-terminated.
    fn c_name(self) -> &'static str {
        match self {
            SWITCHYARD_OK => "SWITCHYARD_OK\0",
            SWITCHYARD_INVALID_ARGUMENT => "SWITCHYARD_INVALID_ARGUMENT\0",
            SWITCHYARD_NULL_POINTER => "SWITCHYARD_NULL_POINTER\0",
            SWITCHYARD_UNKNOWN_TOPIC => "SWITCHYARD_UNKNOWN_TOPIC\0",
            SWITCHYARD_NO_CONFIG => "SWITCHYARD_NO_CONFIG\0",
            SWITCHYARD_CONFIG_SERVICE => "SWITCHYARD_CONFIG_SERVICE\0",
            SWITCHYARD_CACHE => "SWITCHYARD_CACHE\0",
            SWITCHYARD_KAFKA => "SWITCHYARD_KAFKA\0",
            SWITCHYARD_TIMEOUT => "SWITCHYARD_TIMEOUT\0",
            SWITCHYARD_CLOSED => "SWITCHYARD_CLOSED\0",
            SWITCHYARD_QUOTA_EXCEEDED => "SWITCHYARD_QUOTA_EXCEEDED\0",
            SWITCHYARD_PANIC => "SWITCHYARD_PANIC\0",
            SWITCHYARD_INTERNAL => "SWITCHYARD_INTERNAL\0",
        }
    }
}

/// The version of this library, e.g. `"0.1.0"`. The string is static: never free it.
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn switchyard_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_their_codes() {
        assert_eq!(code_of(ErrorKind::UnknownTopic), SWITCHYARD_UNKNOWN_TOPIC);
        assert_eq!(code_of(ErrorKind::Closed), SWITCHYARD_CLOSED);
        assert_eq!(code_of(ErrorKind::QuotaExceeded), SWITCHYARD_QUOTA_EXCEEDED);
        assert!(switchyard_result_is_retriable(SWITCHYARD_TIMEOUT as c_uint));
        assert!(!switchyard_result_is_retriable(SWITCHYARD_KAFKA as c_uint));
        assert!(!switchyard_result_is_retriable(999));
    }

    #[test]
    fn names_cover_every_code_in_value_order() {
        for (i, code) in ALL.iter().enumerate() {
            assert_eq!(*code as usize, i);
            assert_eq!(from_raw(i as c_uint), Some(*code));
            // SAFETY: the function returns a static NUL-terminated string.
            let s = unsafe { std::ffi::CStr::from_ptr(switchyard_result_name(i as c_uint)) };
            assert_eq!(s.to_str().unwrap(), format!("{code:?}"));
        }
        assert_eq!(from_raw(ALL.len() as c_uint), None);
    }

    #[test]
    fn last_error_truncates_on_a_character_boundary() {
        set_last_error(Failure::invalid("héllo"));
        let mut buf = [0 as c_char; 3];
        let mut n = 0usize;
        // SAFETY: buf is 3 writable bytes, n is a valid usize.
        let rc = unsafe { switchyard_last_error_message(buf.as_mut_ptr(), buf.len(), &mut n) };
        assert_eq!(rc, SWITCHYARD_OK);
        assert_eq!(n, "héllo".len());
        // "h" then the 2-byte "é" does not fit in the remaining byte.
        assert_eq!(buf[0] as u8, b'h');
        assert_eq!(buf[1], 0);
    }
}
