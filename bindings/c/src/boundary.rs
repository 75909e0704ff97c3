//! The edge between C and Rust: panic catching, argument conversion, handle boxing.
//!
//! Every exported function runs its body through [`guard`] or [`guard_value`], which catch
//! panics and record failures as the thread's last error. The `arg_*` helpers turn C
//! arguments into Rust references, failing with `SWITCHYARD_NULL_POINTER` or
//! `SWITCHYARD_INVALID_ARGUMENT` instead of crashing.

use std::cell::Cell;
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::error::{Failure, set_last_error, switchyard_result};

/// Runs `f` at the C boundary: `SWITCHYARD_OK` on success; on failure or panic its code,
/// with the message recorded as the calling thread's last error.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Failure>) -> switchyard_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => switchyard_result::SWITCHYARD_OK,
        Ok(Err(e)) => {
            let code = e.code;
            set_last_error(e);
            code
        }
        Err(payload) => {
            set_last_error(Failure::panic(payload.as_ref()));
            switchyard_result::SWITCHYARD_PANIC
        }
    }
}

/// Runs `f` at the C boundary, returning its value, or `default` when it fails or panics (the
/// failure is recorded as the calling thread's last error).
pub(crate) fn guard_value<T>(default: T, f: impl FnOnce() -> Result<T, Failure>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(e);
            default
        }
        Err(payload) => {
            set_last_error(Failure::panic(payload.as_ref()));
            default
        }
    }
}

thread_local! {
    /// Set while this thread runs a delivery callback.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (which calls a delivery callback) marked as inside a callback.
pub(crate) fn in_callback<R>(f: impl FnOnce() -> R) -> R {
    let prev = IN_CALLBACK.replace(true);
    let r = f();
    IN_CALLBACK.set(prev);
    r
}

/// True inside a delivery callback.
pub(crate) fn in_callback_now() -> bool {
    IN_CALLBACK.get()
}

/// True inside a delivery callback or on a thread of a Switchyard runtime, where blocking
/// would deadlock (a callback waiting for reports its own thread serves) or panic.
pub(crate) fn on_runtime_thread() -> bool {
    IN_CALLBACK.get() || tokio::runtime::Handle::try_current().is_ok()
}

/// Fails when called on a runtime thread: `what` blocks.
pub(crate) fn check_may_block(what: &str) -> Result<(), Failure> {
    if on_runtime_thread() {
        return Err(Failure::invalid(format!(
            "{what} blocks and cannot be called from a delivery callback or another \
             Switchyard runtime thread"
        )));
    }
    Ok(())
}

/// A reference from a pointer argument that must not be NULL.
///
/// # Safety
///
/// `p` is NULL or points to a live, properly aligned `T` that stays valid and is not mutated
/// elsewhere for `'a`.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: `as_ref` checks for NULL; otherwise validity is the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null(name))
}

/// A UTF-8 string argument that must not be NULL.
///
/// # Safety
///
/// `p` is NULL or points to a NUL-terminated string that stays valid for `'a`.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: not NULL; NUL termination and lifetime are the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Failure::invalid(format!("{name} is not valid UTF-8")))
}

/// An optional UTF-8 string argument (NULL means absent).
///
/// # Safety
///
/// As for [`arg_str`].
pub(crate) unsafe fn arg_opt_str<'a>(
    p: *const c_char,
    name: &str,
) -> Result<Option<&'a str>, Failure> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: same contract as ours.
    unsafe { arg_str(p, name) }.map(Some)
}

/// A file path argument (any bytes but NUL; not required to be UTF-8).
///
/// # Safety
///
/// As for [`arg_str`].
pub(crate) unsafe fn arg_path<'a>(p: *const c_char, name: &str) -> Result<&'a Path, Failure> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: not NULL; NUL termination and lifetime are the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    if s.is_empty() {
        return Err(Failure::invalid(format!("{name} is empty")));
    }
    use std::os::unix::ffi::OsStrExt;
    Ok(Path::new(std::ffi::OsStr::from_bytes(s.to_bytes())))
}

/// A byte buffer argument: NULL with length 0 is "absent", NULL with a length is an error, a
/// pointer with length 0 is an empty buffer.
///
/// # Safety
///
/// `p` is NULL or valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn arg_bytes<'a>(
    p: *const u8,
    len: usize,
    name: &str,
) -> Result<Option<&'a [u8]>, Failure> {
    if p.is_null() {
        if len == 0 {
            return Ok(None);
        }
        return Err(Failure::null(&format!("{name} (with {name}_len {len})")));
    }
    if len > isize::MAX as usize {
        return Err(Failure::invalid(format!("{name}_len {len} is too large")));
    }
    // SAFETY: not NULL, `len` fits in isize, and the caller guarantees `len` readable bytes.
    Ok(Some(unsafe { std::slice::from_raw_parts(p, len) }))
}

/// An out-pointer argument, which is set to NULL at once so that it is NULL on every failure.
///
/// # Safety
///
/// `p` is NULL or valid for a write of one pointer for `'a`.
pub(crate) unsafe fn arg_out<'a, T>(p: *mut *mut T, name: &str) -> Result<&'a mut *mut T, Failure> {
    // SAFETY: `as_mut` checks for NULL; otherwise validity is the caller's contract.
    let out = unsafe { p.as_mut() }.ok_or_else(|| Failure::null(name))?;
    *out = std::ptr::null_mut();
    Ok(out)
}

/// Hands a new object to C.
pub(crate) fn into_handle<T>(v: T) -> *mut T {
    Box::into_raw(Box::new(v))
}

/// Takes an object back from C for freeing; `None` for NULL.
///
/// # Safety
///
/// `p` is NULL or was returned by [`into_handle`] for the same `T` and has not been freed; no
/// other thread uses it any more.
pub(crate) unsafe fn from_handle<T>(p: *mut T) -> Option<Box<T>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` came from `Box::into_raw` in `into_handle` and ownership returns here once.
    Some(unsafe { Box::from_raw(p) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::switchyard_result::*;

    #[test]
    fn guard_reports_the_failure_code_and_catches_panics() {
        assert_eq!(guard(|| Ok(())), SWITCHYARD_OK);
        assert_eq!(guard(|| Err(Failure::null("x"))), SWITCHYARD_NULL_POINTER);
        assert_eq!(guard(|| panic!("boom")), SWITCHYARD_PANIC);
        assert_eq!(
            guard_value(7, || -> Result<i32, Failure> { panic!("boom") }),
            7
        );
    }

    #[test]
    fn arguments_are_checked_not_trusted() {
        // SAFETY: NULL and static strings satisfy the helpers' contracts.
        unsafe {
            assert_eq!(
                arg_str(std::ptr::null(), "app").unwrap_err().code,
                SWITCHYARD_NULL_POINTER
            );
            let bad = b"\xff\xfe\0";
            assert_eq!(
                arg_str(bad.as_ptr().cast(), "app").unwrap_err().code,
                SWITCHYARD_INVALID_ARGUMENT
            );
            assert_eq!(arg_bytes(std::ptr::null(), 0, "key").unwrap(), None);
            assert_eq!(
                arg_bytes(std::ptr::null(), 3, "key").unwrap_err().code,
                SWITCHYARD_NULL_POINTER
            );
            assert_eq!(arg_bytes(b"ab".as_ptr(), 0, "key").unwrap(), Some(&b""[..]));
        }
    }
}
