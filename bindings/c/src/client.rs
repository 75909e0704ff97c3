//! `switchyard_client`: a Switchyard connection plus the Tokio runtime that runs it.

use std::ffi::c_char;
use std::path::Path;
use std::sync::{Arc, Once};
use std::time::Duration;

use switchyard::Switchyard;
use tokio::runtime::Runtime;

use crate::boundary::{
    arg_opt_str, arg_out, arg_path, arg_ref, arg_str, check_may_block, from_handle, guard,
    guard_value, into_handle, on_runtime_thread,
};
use crate::conf::{ClientSettings, Pem, arg_conf, read_pem, switchyard_conf};
use crate::error::{Failure, switchyard_result};

/// Worker threads of each client's runtime (delivery callbacks run on them).
const WORKER_THREADS: usize = 2;

/// How long freeing the last handle of a client waits for runtime tasks to stop.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A connection to the Switchyard configuration (a config service or a file) with the
/// runtime its producers and consumers run on. Create it with `switchyard_client_connect` or
/// `switchyard_client_from_file`; release it with `switchyard_client_free`.
#[derive(Debug)]
pub struct switchyard_client {
    pub(crate) inner: Arc<ClientInner>,
}

/// Shared by the client handle and every producer and consumer made from it: the client's
/// resources are released when the last of them is freed.
#[derive(Debug)]
pub(crate) struct ClientInner {
    rt: Option<Runtime>,
    sy: Option<Switchyard>,
}

impl ClientInner {
    pub(crate) fn rt(&self) -> &Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives until the client is dropped")
    }

    pub(crate) fn sy(&self) -> &Switchyard {
        self.sy
            .as_ref()
            .expect("the client lives until it is dropped")
    }
}

/// Frees a handle made from `client` (a producer, topic handle or consumer): drops `handle`
/// inside the client's runtime context, which closing its Kafka clients needs (and which may
/// block briefly), then `client` outside it, since that may be the client's last reference.
pub(crate) fn drop_in_runtime<T>(client: Arc<ClientInner>, handle: T) {
    {
        let _ctx = client.rt().enter();
        drop(handle);
    }
    drop(client);
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let sy = self.sy.take();
        let Some(rt) = self.rt.take() else { return };
        {
            let _ctx = rt.enter();
            drop(sy);
        }
        // On a runtime thread (a handle freed in a callback) the runtime cannot be waited for.
        if on_runtime_thread() {
            rt.shutdown_background();
        } else {
            rt.shutdown_timeout(SHUTDOWN_WAIT);
        }
    }
}

fn runtime() -> Result<Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("switchyard-c")
        .on_thread_start(block_sigpipe)
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::new(
                switchyard_result::SWITCHYARD_INTERNAL,
                format!("cannot start the runtime: {e}"),
            )
        })
}

/// Blocks SIGPIPE on the calling thread (each runtime thread), as librdkafka does on its own
/// threads. A C program usually keeps SIGPIPE's default action, which ends the process: a
/// write to a connection the peer has closed (a config service that refuses the client's TLS
/// handshake or restarts) would kill it. Blocked, the signal stays pending on that thread and
/// the write fails with `EPIPE`, which the connection handles as a closed connection.
fn block_sigpipe() {
    // SAFETY: `set` is a local signal set initialised by `sigemptyset` before use; the calls
    // change only this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Logs go to stderr when `SWITCHYARD_LOG` is set (a `tracing` filter such as `info` or
/// `switchyard=debug`); otherwise the library prints nothing.
fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("SWITCHYARD_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}

/// Connects application `app` to the config service and waits until a configuration is in
/// use: at once when the last-known-good cache is valid, otherwise until the first snapshot
/// arrives (at most 10 s, then `SWITCHYARD_NO_CONFIG`).
///
/// - `endpoints`: one or more comma-separated URLs (`http://host:port`, `https://host:port`),
///   tried in turn.
/// - `token`: the app's client token (`switchyard token new --app APP`; the service then
///   serves this app's scoped configuration), or NULL for a service without client tokens.
/// - `cache_path`: file for the last-known-good snapshot, or NULL for the default
///   (`$SWITCHYARD_CACHE_DIR/<app>.snapshot`, else `$HOME/.cache/switchyard/<app>.snapshot`).
/// - `out`: receives the client; set to NULL on failure.
///
/// The configuration is then watched in the background and route and property changes are
/// applied to running producers and consumers without losing in-flight records. Set the
/// environment variable `SWITCHYARD_LOG` (e.g. `info`) to get the library's logs on stderr.
/// `switchyard_client_connect_with` and `switchyard_client_connect_conf` take further options
/// (timeouts, the CA and client certificate for `https://` endpoints, client properties).
///
/// Thread safety: may be called from any thread except a delivery callback (it blocks). The
/// client may then be used from any number of threads at once.
///
/// # Safety
///
/// String arguments must be NULL or NUL-terminated; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_client_connect(
    endpoints: *const c_char,
    app: *const c_char,
    token: *const c_char,
    cache_path: *const c_char,
    out: *mut *mut switchyard_client,
) -> switchyard_result {
    // SAFETY: the caller's contract is the one `switchyard_client_connect_with` needs; NULL
    // options mean the defaults.
    unsafe {
        switchyard_client_connect_with(endpoints, app, token, cache_path, std::ptr::null(), out)
    }
}

/// Options of `switchyard_client_connect_with`. A field left 0 (or NULL) keeps its default,
/// so a zero-initialised struct (`switchyard_connect_options o = {0};`) means all defaults.
///
/// The TLS fields were added at the end in 0.1: a program compiled against an older header
/// must be recompiled. `switchyard_client_connect_conf` takes the same settings by name.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct switchyard_connect_options {
    /// Longest wait for a first configuration when there is no valid cache, in milliseconds
    /// (then `SWITCHYARD_NO_CONFIG`). Default 10,000.
    pub initial_timeout_ms: i32,
    /// How long a config service that stopped answering (a hung or cut-off replica) may hold
    /// the configuration watch before the client fails over to the next endpoint, in
    /// milliseconds: 100 to 3,600,000. Default 10,000.
    pub watch_stall_timeout_ms: i32,
    /// PEM file of the CA certificate(s) that signed the config service's certificate, for
    /// `https://` endpoints, or NULL: the system's trusted roots.
    pub ca_cert_path: *const c_char,
    /// PEM file of a client certificate chain, for a config service that requires mutual
    /// TLS, or NULL: none. Needs `client_key_path`.
    pub client_cert_path: *const c_char,
    /// PEM file of the private key of `client_cert_path`, or NULL.
    pub client_key_path: *const c_char,
}

impl Default for switchyard_connect_options {
    fn default() -> Self {
        Self {
            initial_timeout_ms: 0,
            watch_stall_timeout_ms: 0,
            ca_cert_path: std::ptr::null(),
            client_cert_path: std::ptr::null(),
            client_key_path: std::ptr::null(),
        }
    }
}

impl switchyard_connect_options {
    /// The settings these options stand for; the PEM files are read and checked here.
    ///
    /// # Safety
    ///
    /// Each path is NULL or NUL-terminated.
    unsafe fn settings(&self) -> Result<ClientSettings, Failure> {
        let ms = |v: i32, name: &str| -> Result<Option<Duration>, Failure> {
            match v {
                0 => Ok(None),
                v if v < 0 => Err(Failure::invalid(format!(
                    "options.{name} must be >= 0 (0: the default), not {v}"
                ))),
                v => Ok(Some(Duration::from_millis(v.unsigned_abs().into()))),
            }
        };
        let pem = |p: *const c_char, name: &str, kind: Pem| -> Result<Option<Vec<u8>>, Failure> {
            if p.is_null() {
                return Ok(None);
            }
            let what = format!("options.{name}");
            // SAFETY: not NULL; NUL-terminated by the caller's contract.
            let path = unsafe { arg_path(p, &what) }?;
            read_pem(path, &what, kind).map(Some)
        };
        let identity = match (
            pem(self.client_cert_path, "client_cert_path", Pem::Certificate)?,
            pem(self.client_key_path, "client_key_path", Pem::Key)?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Failure::invalid(
                    "options.client_cert_path is set but options.client_key_path is NULL: a \
                     client certificate needs its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(Failure::invalid(
                    "options.client_key_path is set but options.client_cert_path is NULL: a \
                     private key needs its client certificate",
                ));
            }
        };
        Ok(ClientSettings {
            initial_timeout: ms(self.initial_timeout_ms, "initial_timeout_ms")?,
            watch_stall_timeout: ms(self.watch_stall_timeout_ms, "watch_stall_timeout_ms")?,
            ca_pem: pem(self.ca_cert_path, "ca_cert_path", Pem::Ca)?,
            identity,
            ..ClientSettings::default()
        })
    }
}

/// `switchyard_client_connect` with options: `options` may be NULL (all defaults). A
/// negative field, a watch stall timeout outside 100 ms … 1 h, or a TLS file that cannot be
/// read or holds no PEM block of the right type fails with `SWITCHYARD_INVALID_ARGUMENT`
/// before anything is contacted.
///
/// An `https://` endpoint whose certificate the CA does not vouch for, a service that
/// requires a client certificate and got none, or an `http://` endpoint of a TLS service
/// fails within the initial timeout with `SWITCHYARD_NO_CONFIG`, the last-error message
/// naming the cause.
///
/// Thread safety: as for `switchyard_client_connect`.
///
/// # Safety
///
/// As for `switchyard_client_connect`; `options` must be NULL or readable, and its paths
/// NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_client_connect_with(
    endpoints: *const c_char,
    app: *const c_char,
    token: *const c_char,
    cache_path: *const c_char,
    options: *const switchyard_connect_options,
    out: *mut *mut switchyard_client,
) -> switchyard_result {
    guard(|| {
        // SAFETY: each pointer is checked for NULL; the rest is the caller's contract above.
        let out = unsafe { arg_out(out, "out") }?;
        // SAFETY: as above.
        let args = unsafe { ConnectArgs::new(endpoints, app, token, cache_path) }?;
        // SAFETY: NULL or readable (the caller's contract above).
        let opts = unsafe { options.as_ref() }.copied().unwrap_or_default();
        // SAFETY: the paths are NULL or NUL-terminated (the caller's contract above).
        let settings = unsafe { opts.settings() }?;
        *out = into_handle(connect(args, settings)?);
        Ok(())
    })
}

/// `switchyard_client_connect` with the client settings and Kafka client properties of
/// `conf` (see `switchyard_conf_set`), or all defaults when `conf` is NULL. A conf holding a
/// producer or consumer setting, or a client certificate without its key, fails with
/// `SWITCHYARD_INVALID_ARGUMENT` naming the setting before anything is contacted. `conf` is
/// only read: free it when convenient.
///
/// Failures over TLS are as for `switchyard_client_connect_with`.
///
/// Thread safety: as for `switchyard_client_connect`; no other thread may set `conf` during
/// the call.
///
/// # Safety
///
/// As for `switchyard_client_connect`; `conf` must be NULL or a live conf.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_client_connect_conf(
    endpoints: *const c_char,
    app: *const c_char,
    token: *const c_char,
    cache_path: *const c_char,
    conf: *const switchyard_conf,
    out: *mut *mut switchyard_client,
) -> switchyard_result {
    guard(|| {
        // SAFETY: each pointer is checked for NULL; the rest is the caller's contract above.
        let out = unsafe { arg_out(out, "out") }?;
        // SAFETY: as above.
        let args = unsafe { ConnectArgs::new(endpoints, app, token, cache_path) }?;
        // SAFETY: NULL or live (the caller's contract above).
        let settings = match unsafe { arg_conf(conf) } {
            Some(c) => c.client_settings()?,
            None => ClientSettings::default(),
        };
        *out = into_handle(connect(args, settings)?);
        Ok(())
    })
}

/// The arguments every connect function takes, checked.
struct ConnectArgs<'a> {
    endpoints: Vec<&'a str>,
    app: &'a str,
    token: Option<&'a str>,
    cache_path: Option<&'a Path>,
}

impl<'a> ConnectArgs<'a> {
    /// # Safety
    ///
    /// Each pointer is NULL or NUL-terminated and stays valid for `'a`.
    unsafe fn new(
        endpoints: *const c_char,
        app: *const c_char,
        token: *const c_char,
        cache_path: *const c_char,
    ) -> Result<Self, Failure> {
        // SAFETY: each pointer is checked for NULL; the rest is the caller's contract above.
        let endpoints = unsafe { arg_str(endpoints, "endpoints") }?;
        // SAFETY: as above.
        let app = unsafe { arg_str(app, "app") }?;
        // SAFETY: as above.
        let token = unsafe { arg_opt_str(token, "token") }?;
        let cache_path = if cache_path.is_null() {
            None
        } else {
            // SAFETY: not NULL; the caller's contract above.
            Some(unsafe { arg_path(cache_path, "cache_path") }?)
        };
        Ok(Self {
            endpoints: endpoints
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect(),
            app,
            token,
            cache_path,
        })
    }
}

/// Connects with `settings` and waits for a first configuration.
fn connect(args: ConnectArgs<'_>, s: ClientSettings) -> Result<switchyard_client, Failure> {
    check_may_block("switchyard_client_connect")?;
    if args.endpoints.is_empty() {
        return Err(Failure::invalid("endpoints names no endpoint"));
    }
    init_logging();
    let mut b = Switchyard::builder(args.app).language("c");
    for e in args.endpoints {
        b = b.endpoint(e);
    }
    if let Some(t) = args.token {
        b = b.token(t);
    }
    match (args.cache_path, s.cache) {
        (Some(_), Some(false)) => {
            return Err(Failure::invalid(
                "cache_path is given but switchyard.cache.enable is false",
            ));
        }
        (Some(p), _) => b = b.cache_path(p),
        (None, Some(false)) => b = b.without_cache(),
        (None, _) => {}
    }
    if let Some(d) = s.initial_timeout {
        b = b.initial_timeout(d);
    }
    if let Some(d) = s.watch_stall_timeout {
        b = b.watch_stall_timeout(d);
    }
    if let Some(ca) = s.ca_pem {
        b = b.ca_certificate(ca);
    }
    if let Some((cert, key)) = s.identity {
        b = b.client_certificate(cert, key);
    }
    if let Some(id) = s.client_id {
        b = b.client_id(id);
    }
    for (k, v) in s.properties {
        b = b.property(k, v);
    }
    let rt = runtime()?;
    let sy = rt.block_on(b.connect())?;
    Ok(switchyard_client {
        inner: Arc::new(ClientInner {
            rt: Some(rt),
            sy: Some(sy),
        }),
    })
}

/// A client whose configuration is a file: a desired-state YAML/JSON file (the format of
/// `switchyard apply -f`) or a snapshot cache file. No config service is contacted and the
/// configuration never changes. `out` receives the client; set to NULL on failure.
///
/// Errors: `SWITCHYARD_CACHE` when the file is unreadable or invalid,
/// `SWITCHYARD_INVALID_ARGUMENT` for a bad `app`.
///
/// Thread safety: may be called from any thread; the client may then be used from any number
/// of threads at once.
///
/// # Safety
///
/// `path` and `app` must be NULL or NUL-terminated; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_client_from_file(
    path: *const c_char,
    app: *const c_char,
    out: *mut *mut switchyard_client,
) -> switchyard_result {
    guard(|| {
        // SAFETY: each pointer is checked for NULL; the rest is the caller's contract above.
        let out = unsafe { arg_out(out, "out") }?;
        // SAFETY: as above.
        let path = unsafe { arg_path(path, "path") }?;
        // SAFETY: as above.
        let app = unsafe { arg_str(app, "app") }?;
        init_logging();
        let rt = runtime()?;
        let sy = {
            let _ctx = rt.enter();
            Switchyard::from_file(path, app)?
        };
        *out = into_handle(switchyard_client {
            inner: Arc::new(ClientInner {
                rt: Some(rt),
                sy: Some(sy),
            }),
        });
        Ok(())
    })
}

/// The configuration version the client uses now (0 when `client` is NULL).
///
/// Thread safety: may be called from any thread.
///
/// # Safety
///
/// `client` must be NULL or a live client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_client_config_version(client: *const switchyard_client) -> u64 {
    guard_value(0, || {
        // SAFETY: checked for NULL; liveness is the caller's contract.
        let c = unsafe { arg_ref(client, "client") }?;
        Ok(c.inner.sy().version())
    })
}

/// Releases the client handle. Producers and consumers made from it stay usable: the
/// connection and runtime are released when the last of them is freed too. NULL is a no-op.
///
/// Thread safety: call it once, when no other thread uses this handle. When it releases the
/// runtime it waits up to 5 s for the runtime's threads, so prefer not to call it from a
/// delivery callback.
///
/// # Safety
///
/// `client` must be NULL or a client not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_client_free(client: *mut switchyard_client) {
    guard_value((), || {
        // SAFETY: NULL or a handle from `into_handle`, freed once (the caller's contract).
        drop(unsafe { from_handle(client) });
        Ok(())
    })
}

/// Copies the client's metrics, in the Prometheus text exposition format (version 0.0.4),
/// into `buf`: messages and bytes sent and received per logical topic and cluster, send errors,
/// the send latency histogram, throttled records, route changes, the configuration version and
/// its age. Serve it on the application's `/metrics` endpoint.
///
/// At most `len - 1` bytes are written, followed by a NUL. `*out_len`, when `out_len` is not
/// NULL, receives the full length of the text without the NUL, so `*out_len >= len` means it
/// was truncated: call with `buf` NULL and `len` 0 to ask for the length, then again with a
/// larger buffer (the text may have grown in between: check `*out_len` again). A truncated text
/// is cut at a line end when one fits, so it never ends inside a sample.
///
/// Errors: `SWITCHYARD_NULL_POINTER` when `client` is NULL, or `buf` is NULL and `len` is not 0.
///
/// Thread safety: may be called from any thread, including delivery callbacks.
///
/// # Safety
///
/// `client` must be NULL or a live client; `buf` must be NULL or valid for writes of `len`
/// bytes; `out_len` must be NULL or valid for a write of one `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_client_metrics(
    client: *const switchyard_client,
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL; liveness is the caller's contract.
        let c = unsafe { arg_ref(client, "client") }?;
        if buf.is_null() && len != 0 {
            return Err(Failure::new(
                switchyard_result::SWITCHYARD_NULL_POINTER,
                "buf is NULL but len is not 0",
            ));
        }
        let text = c.inner.sy().metrics().encode();
        if !out_len.is_null() {
            // SAFETY: `out_len` is not NULL and the caller guarantees it is writable.
            unsafe { *out_len = text.len() };
        }
        if len == 0 {
            return Ok(());
        }
        let n = if text.len() < len {
            text.len()
        } else {
            // Cut after the last whole line that fits (the text is ASCII apart from label
            // values, and a line end is always a character boundary).
            text.as_bytes()[..len - 1]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
        };
        // SAFETY: `buf` is valid for `len` bytes (caller contract) and `n + 1 <= len`; the
        // source is a live Rust string of at least `n` bytes that does not overlap `buf`.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
        Ok(())
    })
}
