//! `switchyard_consumer`: a consumer group member over logical topics, with poll and commit.

use std::ffi::c_char;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchyard::{Consumer, ConsumerOptions};

use crate::boundary::{
    arg_out, arg_ref, arg_str, check_may_block, from_handle, guard, guard_value, into_handle,
};
use crate::client::{ClientInner, drop_in_runtime, switchyard_client};
use crate::conf::{arg_conf, switchyard_conf};
use crate::error::{Failure, switchyard_result};
use crate::message::switchyard_message;

/// Tells consumers apart, so a message is committed through the consumer that returned it.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A member of a consumer group reading logical topics, wherever the configuration says they
/// live; it follows route changes without a restart. Create it with `switchyard_consumer_new`;
/// release it with `switchyard_consumer_free`.
#[derive(Debug)]
pub struct switchyard_consumer {
    client: Arc<ClientInner>,
    consumer: Consumer,
    id: u64,
}

/// A consumer in group `group` over the `n` logical topics in `topics`. With `auto_commit`
/// non-zero, the offsets of messages returned by `switchyard_consumer_poll` are committed in
/// the background; with 0, commit with `switchyard_consumer_commit`. A group with no committed
/// offset starts at the earliest record. `out` receives the consumer; set to NULL on failure.
///
/// The group joins lazily, on the first poll.
///
/// Thread safety: may be called from any thread.
///
/// # Safety
///
/// `client` must be NULL or a live client; `group` NULL or NUL-terminated; `topics` NULL or an
/// array of `n` pointers, each NULL or NUL-terminated; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_consumer_new(
    client: *const switchyard_client,
    group: *const c_char,
    topics: *const *const c_char,
    n: usize,
    auto_commit: i32,
    out: *mut *mut switchyard_consumer,
) -> switchyard_result {
    guard(|| {
        let opts = ConsumerOptions {
            auto_commit: auto_commit != 0,
            ..ConsumerOptions::default()
        };
        // SAFETY: the caller's contract is the one `new_consumer` needs.
        unsafe { new_consumer(client, group, topics, n, opts, out) }
    })
}

/// `switchyard_consumer_new` with the consumer settings and Kafka consumer properties of
/// `conf` (see `switchyard_conf_set`; `switchyard.auto.commit` replaces the `auto_commit`
/// argument, default off), or the defaults when `conf` is NULL. The properties apply to this
/// consumer only, above the client's (the config service's enforced settings still win). A
/// conf holding a client or producer setting fails with `SWITCHYARD_INVALID_ARGUMENT` naming
/// it. `conf` is only read: free it when convenient.
///
/// Thread safety: as for `switchyard_consumer_new`; no other thread may set `conf` during
/// the call.
///
/// # Safety
///
/// As for `switchyard_consumer_new`; `conf` must be NULL or a live conf.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_consumer_new_conf(
    client: *const switchyard_client,
    group: *const c_char,
    topics: *const *const c_char,
    n: usize,
    conf: *const switchyard_conf,
    out: *mut *mut switchyard_consumer,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL, set to NULL; the rest is the caller's contract above.
        unsafe { arg_out(out, "out") }?;
        // SAFETY: NULL or live (the caller's contract above).
        let opts = match unsafe { arg_conf(conf) } {
            Some(c) => c.consumer_options()?,
            None => ConsumerOptions::default(),
        };
        // SAFETY: the caller's contract is the one `new_consumer` needs.
        unsafe { new_consumer(client, group, topics, n, opts, out) }
    })
}

/// The body of `switchyard_consumer_new` and `switchyard_consumer_new_conf`.
///
/// # Safety
///
/// As for `switchyard_consumer_new`.
unsafe fn new_consumer(
    client: *const switchyard_client,
    group: *const c_char,
    topics: *const *const c_char,
    n: usize,
    opts: ConsumerOptions,
    out: *mut *mut switchyard_consumer,
) -> Result<(), Failure> {
    // SAFETY: each pointer is checked for NULL; the rest is the caller's contract above.
    let out = unsafe { arg_out(out, "out") }?;
    // SAFETY: as above.
    let client = unsafe { arg_ref(client, "client") }?;
    // SAFETY: as above.
    let group = unsafe { arg_str(group, "group") }?;
    if topics.is_null() {
        return Err(Failure::null("topics"));
    }
    if n == 0 {
        return Err(Failure::invalid("n is 0: subscribe to at least one topic"));
    }
    if n > isize::MAX as usize / std::mem::size_of::<*const c_char>() {
        return Err(Failure::invalid(format!("n {n} is too large")));
    }
    // SAFETY: not NULL, size checked, and `n` readable pointers by the caller's contract.
    let ptrs = unsafe { std::slice::from_raw_parts(topics, n) };
    let mut names = Vec::with_capacity(n);
    for (i, p) in ptrs.iter().enumerate() {
        // SAFETY: each entry is NULL or NUL-terminated by the caller's contract.
        names.push(unsafe { arg_str(*p, &format!("topics[{i}]")) }?);
    }
    let inner = client.inner.clone();
    let consumer = {
        let _ctx = inner.rt().enter();
        inner.sy().consumer_with(group, &names, opts)?
    };
    *out = into_handle(switchyard_consumer {
        client: inner,
        consumer,
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
    });
    Ok(())
}

/// Waits up to `timeout_ms` milliseconds (< 0: without limit; 0: only what is already
/// there) for the next message from any subscribed topic. On success `*message` receives it —
/// free it with `switchyard_message_free`. When nothing arrives in time it returns
/// `SWITCHYARD_TIMEOUT` with `*message` NULL; poll again.
///
/// A timeout loses nothing: a message not returned by this call is returned by a later one.
///
/// Thread safety: may be called from any thread (calls on one consumer are serialized); not
/// from a delivery callback (`SWITCHYARD_INVALID_ARGUMENT`).
///
/// # Safety
///
/// `consumer` must be NULL or a live consumer; `message` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_consumer_poll(
    consumer: *const switchyard_consumer,
    timeout_ms: i32,
    message: *mut *mut switchyard_message,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL; the rest is the caller's contract above.
        let out = unsafe { arg_out(message, "message") }?;
        // SAFETY: as above.
        let c = unsafe { arg_ref(consumer, "consumer") }?;
        check_may_block("switchyard_consumer_poll")?;
        let recv = c.consumer.recv();
        let r = match u64::try_from(timeout_ms) {
            Ok(ms) => c
                .client
                .rt()
                // The timer is created inside the runtime (this thread is not one of its own).
                .block_on(async { tokio::time::timeout(Duration::from_millis(ms), recv).await })
                .map_err(|_| {
                    Failure::new(
                        switchyard_result::SWITCHYARD_TIMEOUT,
                        format!("no message within {ms} ms"),
                    )
                })?,
            Err(_) => c.client.rt().block_on(recv),
        };
        let msg = r?;
        *out = into_handle(switchyard_message::new(msg, c.id));
        Ok(())
    })
}

/// Commits `message` and every earlier message of its partition for the group, and waits for
/// the broker to confirm. `message` must come from this consumer's poll
/// (`SWITCHYARD_INVALID_ARGUMENT` otherwise). As in Kafka, committing a message after a later
/// one of the same partition moves the committed offset back: commit in poll order.
///
/// Thread safety: may be called from any thread; not from a delivery callback.
///
/// # Safety
///
/// `consumer` must be NULL or a live consumer; `message` NULL or a live message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_consumer_commit(
    consumer: *const switchyard_consumer,
    message: *const switchyard_message,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL; liveness is the caller's contract.
        let c = unsafe { arg_ref(consumer, "consumer") }?;
        // SAFETY: as above.
        let m = unsafe { arg_ref(message, "message") }?;
        if m.consumer_id != c.id {
            return Err(Failure::invalid(
                "the message was returned by another consumer; commit it through that one",
            ));
        }
        check_may_block("switchyard_consumer_commit")?;
        c.client.rt().block_on(c.consumer.commit(&m.msg))?;
        Ok(())
    })
}

/// Releases the consumer: it leaves its group on every cluster (which may take a moment).
/// Messages it returned stay valid until freed. NULL is a no-op.
///
/// Thread safety: call it once, when no other thread uses this consumer.
///
/// # Safety
///
/// `consumer` must be NULL or a consumer not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_consumer_free(consumer: *mut switchyard_consumer) {
    guard_value((), || {
        // SAFETY: NULL or a handle from `into_handle`, freed once (the caller's contract).
        let Some(c) = (unsafe { from_handle(consumer) }) else {
            return Ok(());
        };
        drop_in_runtime(c.client.clone(), c);
        Ok(())
    })
}
