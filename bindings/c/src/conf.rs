//! `switchyard_conf`: settings by name for connecting a client and making producers and
//! consumers, checked when they are set (after librdkafka's `rd_kafka_conf_set`).
//!
//! A name starting with `switchyard.` is a Switchyard setting from the table [`SPECS`]; an
//! unknown one is refused. Any other name is a Kafka client property, checked as the Rust
//! SDK's builder checks application properties. Which object a conf is used for decides
//! which Switchyard settings it may hold: [`switchyard_conf::client_settings`],
//! [`switchyard_conf::producer_settings`] and [`switchyard_conf::consumer_options`] refuse
//! the settings of another kind.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsStr, c_char};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use switchyard::{ConsumerOptions, ProducerOptions};
use switchyard_proto::client::TlsOptions;

use crate::boundary::{arg_ref, arg_str, from_handle, guard, guard_value, into_handle};
use crate::error::{Failure, switchyard_result};
use crate::producer::SWITCHYARD_MAX_IN_FLIGHT;

/// The object a Switchyard setting configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Client,
    Producer,
    Consumer,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        }
    }

    fn entry_point(self) -> &'static str {
        match self {
            Kind::Client => "switchyard_client_connect_conf",
            Kind::Producer => "switchyard_producer_new_conf",
            Kind::Consumer => "switchyard_consumer_new_conf",
        }
    }
}

/// What a setting sets; two names for one thing (`.location` and `.pem`) share a slot, so
/// the one set last wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Ca,
    Certificate,
    Key,
    InitialTimeout,
    WatchStallTimeout,
    ClientId,
    Cache,
    MaxInFlight,
    IdleClientClose,
    MaxAbortHold,
    MaxSwitchFlush,
    MaxCutOffHold,
    AutoCommit,
    DrainGrace,
}

/// The PEM contents a TLS setting must hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pem {
    Ca,
    Certificate,
    Key,
}

/// How a setting's value is read.
#[derive(Debug, Clone, Copy)]
enum Parse {
    /// Whole milliseconds in `min..=max`.
    Ms { min: u64, max: u64 },
    /// `true` or `false`.
    Bool,
    /// A whole number in `min..=max`.
    Count { min: u64, max: u64 },
    /// Non-empty text without control characters.
    Name,
    /// A PEM file, read and checked when set.
    PemFile(Pem),
    /// PEM text, checked when set.
    PemText(Pem),
}

/// One Switchyard setting.
#[derive(Debug)]
struct Spec {
    name: &'static str,
    slot: Slot,
    kind: Kind,
    parse: Parse,
}

/// Largest value of a millisecond or count setting (as librdkafka's integer properties).
const MAX_INT: u64 = i32::MAX as u64;

/// Every Switchyard setting. Keep the header's documentation of `switchyard_conf_set` in step.
const SPECS: &[Spec] = &[
    spec(
        "switchyard.ca.location",
        Slot::Ca,
        Kind::Client,
        Parse::PemFile(Pem::Ca),
    ),
    spec(
        "switchyard.ca.pem",
        Slot::Ca,
        Kind::Client,
        Parse::PemText(Pem::Ca),
    ),
    spec(
        "switchyard.certificate.location",
        Slot::Certificate,
        Kind::Client,
        Parse::PemFile(Pem::Certificate),
    ),
    spec(
        "switchyard.certificate.pem",
        Slot::Certificate,
        Kind::Client,
        Parse::PemText(Pem::Certificate),
    ),
    spec(
        "switchyard.key.location",
        Slot::Key,
        Kind::Client,
        Parse::PemFile(Pem::Key),
    ),
    spec(
        "switchyard.key.pem",
        Slot::Key,
        Kind::Client,
        Parse::PemText(Pem::Key),
    ),
    spec(
        "switchyard.initial.timeout.ms",
        Slot::InitialTimeout,
        Kind::Client,
        Parse::Ms {
            min: 0,
            max: MAX_INT,
        },
    ),
    spec(
        "switchyard.watch.stall.timeout.ms",
        Slot::WatchStallTimeout,
        Kind::Client,
        Parse::Ms {
            min: 100,
            max: 3_600_000,
        },
    ),
    spec(
        "switchyard.client.id",
        Slot::ClientId,
        Kind::Client,
        Parse::Name,
    ),
    spec(
        "switchyard.cache.enable",
        Slot::Cache,
        Kind::Client,
        Parse::Bool,
    ),
    spec(
        "switchyard.max.in.flight",
        Slot::MaxInFlight,
        Kind::Producer,
        Parse::Count {
            min: 1,
            max: MAX_INT,
        },
    ),
    spec(
        "switchyard.idle.client.close.ms",
        Slot::IdleClientClose,
        Kind::Producer,
        Parse::Ms {
            min: 0,
            max: MAX_INT,
        },
    ),
    spec(
        "switchyard.max.abort.hold.ms",
        Slot::MaxAbortHold,
        Kind::Producer,
        Parse::Ms {
            min: 0,
            max: MAX_INT,
        },
    ),
    spec(
        "switchyard.max.switch.flush.ms",
        Slot::MaxSwitchFlush,
        Kind::Producer,
        Parse::Ms {
            min: 0,
            max: MAX_INT,
        },
    ),
    spec(
        "switchyard.max.cut.off.hold.ms",
        Slot::MaxCutOffHold,
        Kind::Producer,
        Parse::Ms {
            min: 0,
            max: MAX_INT,
        },
    ),
    spec(
        "switchyard.auto.commit",
        Slot::AutoCommit,
        Kind::Consumer,
        Parse::Bool,
    ),
    spec(
        "switchyard.drain.grace.ms",
        Slot::DrainGrace,
        Kind::Consumer,
        Parse::Ms {
            min: 0,
            max: MAX_INT,
        },
    ),
];

const fn spec(name: &'static str, slot: Slot, kind: Kind, parse: Parse) -> Spec {
    Spec {
        name,
        slot,
        kind,
        parse,
    }
}

/// A setting's checked value.
#[derive(Clone)]
enum Value {
    Duration(Duration),
    Bool(bool),
    Count(u64),
    Text(String),
    Pem(Vec<u8>),
}

/// Settings by name, checked when set, for `switchyard_client_connect_conf`,
/// `switchyard_producer_new_conf` and `switchyard_consumer_new_conf`. Create it with
/// `switchyard_conf_new`, fill it with `switchyard_conf_set`, release it with
/// `switchyard_conf_free`.
#[derive(Clone, Default)]
pub struct switchyard_conf {
    settings: BTreeMap<Slot, (&'static Spec, Value)>,
    properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for switchyard_conf {
    // Names only: values may be secrets (`sasl.password`, a private key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("switchyard_conf")
            .field(
                "settings",
                &self
                    .settings
                    .values()
                    .map(|(s, _)| s.name)
                    .collect::<Vec<_>>(),
            )
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a client is connected with, from a conf or from `switchyard_connect_options`.
#[derive(Debug, Default)]
pub(crate) struct ClientSettings {
    pub(crate) initial_timeout: Option<Duration>,
    pub(crate) watch_stall_timeout: Option<Duration>,
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (both or neither).
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) client_id: Option<String>,
    /// False: keep no last-known-good cache.
    pub(crate) cache: Option<bool>,
    pub(crate) properties: BTreeMap<String, String>,
}

impl switchyard_conf {
    /// Checks `value` for setting or property `name` and records it.
    fn set(&mut self, name: &str, value: &CStr) -> Result<(), Failure> {
        if let Some(rest) = name.strip_prefix("switchyard.") {
            let Some(spec) = SPECS.iter().find(|s| s.name == name) else {
                let known: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
                return Err(Failure::invalid(format!(
                    "unknown Switchyard setting {name:?} ({rest:?} after \"switchyard.\"); the \
                     settings are {}",
                    known.join(", ")
                )));
            };
            let v = parse(spec, value)?;
            self.settings.insert(spec.slot, (spec, v));
            return Ok(());
        }
        check_property_key(name)?;
        let v = value.to_str().map_err(|_| {
            Failure::invalid(format!("the value of property {name} is not valid UTF-8"))
        })?;
        self.properties.insert(name.to_string(), v.to_string());
        Ok(())
    }

    /// Fails when a Switchyard setting is for another kind of object than `kind`.
    fn check_kind(&self, kind: Kind) -> Result<(), Failure> {
        match self.settings.values().find(|(s, _)| s.kind != kind) {
            None => Ok(()),
            Some((s, _)) => Err(Failure::invalid(format!(
                "conf: {} is a {} setting (for {}); {} takes {} settings and Kafka client \
                 properties only",
                s.name,
                s.kind.what(),
                s.kind.entry_point(),
                kind.entry_point(),
                kind.what()
            ))),
        }
    }

    fn get(&self, slot: Slot) -> Option<&Value> {
        self.settings.get(&slot).map(|(_, v)| v)
    }

    fn duration(&self, slot: Slot) -> Option<Duration> {
        match self.get(slot) {
            Some(Value::Duration(d)) => Some(*d),
            _ => None,
        }
    }

    fn flag(&self, slot: Slot) -> Option<bool> {
        match self.get(slot) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn pem(&self, slot: Slot) -> Option<(&'static str, Vec<u8>)> {
        match self.settings.get(&slot) {
            Some((s, Value::Pem(p))) => Some((s.name, p.clone())),
            _ => None,
        }
    }

    /// The client settings; fails on a producer or consumer setting, or on a client
    /// certificate without its key (or the reverse).
    pub(crate) fn client_settings(&self) -> Result<ClientSettings, Failure> {
        self.check_kind(Kind::Client)?;
        let identity = match (self.pem(Slot::Certificate), self.pem(Slot::Key)) {
            (Some((_, cert)), Some((_, key))) => Some((cert, key)),
            (None, None) => None,
            (Some((set, _)), None) => {
                return Err(Failure::invalid(format!(
                    "conf: {set} is set but neither switchyard.key.location nor \
                     switchyard.key.pem: a client certificate needs its private key"
                )));
            }
            (None, Some((set, _))) => {
                return Err(Failure::invalid(format!(
                    "conf: {set} is set but neither switchyard.certificate.location nor \
                     switchyard.certificate.pem: a private key needs its client certificate"
                )));
            }
        };
        Ok(ClientSettings {
            initial_timeout: self.duration(Slot::InitialTimeout),
            watch_stall_timeout: self.duration(Slot::WatchStallTimeout),
            ca_pem: self.pem(Slot::Ca).map(|(_, p)| p),
            identity,
            client_id: match self.get(Slot::ClientId) {
                Some(Value::Text(t)) => Some(t.clone()),
                _ => None,
            },
            cache: self.flag(Slot::Cache),
            properties: self.properties.clone(),
        })
    }

    /// The producer options and in-flight cap; fails on a client or consumer setting.
    pub(crate) fn producer_settings(&self) -> Result<(ProducerOptions, usize), Failure> {
        self.check_kind(Kind::Producer)?;
        let mut o = ProducerOptions {
            properties: self.properties.clone(),
            ..ProducerOptions::default()
        };
        let set = |d: &mut Duration, slot| {
            if let Some(v) = self.duration(slot) {
                *d = v;
            }
        };
        set(&mut o.idle_client_close, Slot::IdleClientClose);
        set(&mut o.max_abort_hold, Slot::MaxAbortHold);
        set(&mut o.max_switch_flush, Slot::MaxSwitchFlush);
        set(&mut o.max_cut_off_hold, Slot::MaxCutOffHold);
        let cap = match self.get(Slot::MaxInFlight) {
            // At most `MAX_INT`, checked when set.
            Some(Value::Count(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
            _ => SWITCHYARD_MAX_IN_FLIGHT,
        };
        Ok((o, cap))
    }

    /// The consumer options; fails on a client or producer setting.
    pub(crate) fn consumer_options(&self) -> Result<ConsumerOptions, Failure> {
        self.check_kind(Kind::Consumer)?;
        let mut o = ConsumerOptions {
            properties: self.properties.clone(),
            ..ConsumerOptions::default()
        };
        if let Some(b) = self.flag(Slot::AutoCommit) {
            o.auto_commit = b;
        }
        if let Some(d) = self.duration(Slot::DrainGrace) {
            o.drain_grace = d;
        }
        Ok(o)
    }
}

/// A Kafka client property name, checked as the SDK's builder checks application properties.
fn check_property_key(name: &str) -> Result<(), Failure> {
    switchyard_proto::validate::check_property_key("name", name)
        .map_err(|e| Failure::invalid(e.to_string()))?;
    if name == "bootstrap.servers" {
        return Err(Failure::invalid(
            "name: bootstrap.servers comes from the config service (each cluster's own); it \
             cannot be set by the application",
        ));
    }
    Ok(())
}

/// Reads `value` as `spec` says.
fn parse(spec: &Spec, value: &CStr) -> Result<Value, Failure> {
    let name = spec.name;
    let text = || {
        value
            .to_str()
            .map_err(|_| Failure::invalid(format!("{name}: the value is not valid UTF-8")))
    };
    match spec.parse {
        Parse::Ms { min, max } => match text()?.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Value::Duration(Duration::from_millis(v))),
            _ => Err(Failure::invalid(format!(
                "{name} must be a whole number of milliseconds from {min} to {max}, not {:?}",
                text()?
            ))),
        },
        Parse::Count { min, max } => match text()?.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Value::Count(v)),
            _ => Err(Failure::invalid(format!(
                "{name} must be a whole number from {min} to {max}, not {:?}",
                text()?
            ))),
        },
        Parse::Bool => match text()? {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            t => Err(Failure::invalid(format!(
                "{name} must be true or false, not {t:?}"
            ))),
        },
        Parse::Name => {
            let t = text()?;
            if t.is_empty() || t.chars().any(char::is_control) {
                return Err(Failure::invalid(format!(
                    "{name} must be non-empty text without control characters, not {t:?}"
                )));
            }
            Ok(Value::Text(t.to_string()))
        }
        Parse::PemText(pem) => {
            let bytes = text()?.as_bytes().to_vec();
            check_pem(&bytes, name, pem)?;
            Ok(Value::Pem(bytes))
        }
        Parse::PemFile(pem) => {
            // A path: any bytes.
            let path = Path::new(OsStr::from_bytes(value.to_bytes()));
            if path.as_os_str().is_empty() {
                return Err(Failure::invalid(format!(
                    "{name}: the path is empty; give a PEM file"
                )));
            }
            read_pem(path, name, pem).map(Value::Pem)
        }
    }
}

/// Reads the PEM file at `path` for `what` (a setting or option name) and checks that it
/// holds what `pem` needs.
pub(crate) fn read_pem(path: &Path, what: &str, pem: Pem) -> Result<Vec<u8>, Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::invalid(format!("{what}: cannot read {}: {e}", path.display())))?;
    check_pem(&bytes, &format!("{what} ({})", path.display()), pem)?;
    Ok(bytes)
}

/// Checks that `bytes` hold a PEM block of the type `pem` needs, as the SDK does when it
/// connects.
fn check_pem(bytes: &[u8], what: &str, pem: Pem) -> Result<(), Failure> {
    // The SDK checks a certificate and its key together; a stand-in for the other half makes
    // it check one alone (it looks only for the PEM block types).
    const ANY_CERT: &[u8] = b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
    const ANY_KEY: &[u8] = b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n";
    let tls = match pem {
        Pem::Ca => TlsOptions::ca(Some(bytes.to_vec())),
        Pem::Certificate => TlsOptions {
            ca_pem: None,
            identity: Some((bytes.to_vec(), ANY_KEY.to_vec())),
        },
        Pem::Key => TlsOptions {
            ca_pem: None,
            identity: Some((ANY_CERT.to_vec(), bytes.to_vec())),
        },
    };
    tls.check()
        .map_err(|e| Failure::invalid(format!("{what}: {e}")))
}

/// A new, empty configuration: every setting at its default. Release it with
/// `switchyard_conf_free`. Returns NULL only if the library fails internally (then
/// `switchyard_last_error_message` says why).
///
/// Thread safety: may be called from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn switchyard_conf_new() -> *mut switchyard_conf {
    guard_value(std::ptr::null_mut(), || {
        Ok(into_handle(switchyard_conf::default()))
    })
}

/// Sets `name` to `value` in `conf`, after checking both (like librdkafka's
/// `rd_kafka_conf_set`): on failure `conf` is unchanged and the last-error message names the
/// setting and what is wrong. Setting a name again replaces its value.
///
/// Names that start with `switchyard.` are Switchyard settings; an unknown one is refused.
/// For `switchyard_client_connect_conf`:
/// - `switchyard.ca.location` (a PEM file, read now) or `switchyard.ca.pem` (PEM text): the
///   CA certificate(s) that signed the config service's certificate, for `https://`
///   endpoints. Without it the system's trusted roots are used.
/// - `switchyard.certificate.location` / `switchyard.certificate.pem` and
///   `switchyard.key.location` / `switchyard.key.pem`: a client certificate chain and its
///   private key, for a config service that requires mutual TLS (set both).
/// - `switchyard.initial.timeout.ms` (0 … 2147483647, default 10000): longest wait for a
///   first configuration when there is no valid cache (then `SWITCHYARD_NO_CONFIG`).
/// - `switchyard.watch.stall.timeout.ms` (100 … 3600000, default 10000): how long a config
///   service that stopped answering may hold the watch before the next endpoint is tried.
/// - `switchyard.client.id`: the id reported to the service (default: app, host, pid and a
///   random suffix); also the prefix of the Kafka clients' `client.id`.
/// - `switchyard.cache.enable` (`true`/`false`, default `true`): `false` keeps no
///   last-known-good cache.
///
/// For `switchyard_producer_new_conf`:
/// - `switchyard.max.in.flight` (1 … 2147483647, default `SWITCHYARD_MAX_IN_FLIGHT`): sends
///   in flight before `switchyard_producer_send` waits for room.
/// - `switchyard.idle.client.close.ms` (default 30000): how long a cluster's Kafka client
///   that no route uses any more is kept before it is closed.
/// - `switchyard.max.abort.hold.ms` (default 30000): longest a topic's sends are held while
///   an aborted migration's records are copied back.
/// - `switchyard.max.switch.flush.ms` (default 15000): longest a route switch waits for the
///   sends in flight to the old location.
/// - `switchyard.max.cut.off.hold.ms` (default 30000): longest a send to a topic in the
///   middle of a move waits while the client is cut off from the config service.
///
/// For `switchyard_consumer_new_conf`:
/// - `switchyard.auto.commit` (`true`/`false`, default `false`): commit the offsets of
///   polled messages in the background.
/// - `switchyard.drain.grace.ms` (default 10000): after a topic moves, how long its old
///   location is still read at least.
///
/// Every other name is a Kafka client property (librdkafka's, e.g. `linger.ms`,
/// `compression.type`), for any of the three: lower-case words joined by `.`, `_` or `-`, at
/// most 128 characters, and not `bootstrap.servers` (which comes from the config service).
/// librdkafka checks its value when a Kafka client is made. The config service's enforced
/// settings still win over it. On a client conf it applies to every producer and consumer of
/// the client; on a producer or consumer conf, to that one only (above the client's).
///
/// Errors: `SWITCHYARD_NULL_POINTER` for a NULL `conf`, `name` or `value`;
/// `SWITCHYARD_INVALID_ARGUMENT` for an unknown or malformed name, a value out of range or
/// not UTF-8 (paths may be any bytes), an unreadable file or one that holds no PEM block of
/// the right type.
///
/// Thread safety: not from two threads on one `conf` at once, nor while another thread uses
/// it.
///
/// # Safety
///
/// `conf` must be NULL or a live conf; `name` and `value` NULL or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_conf_set(
    conf: *mut switchyard_conf,
    name: *const c_char,
    value: *const c_char,
) -> switchyard_result {
    guard(|| {
        // SAFETY: checked for NULL; liveness and exclusive use are the caller's contract.
        let conf = unsafe { conf.as_mut() }.ok_or_else(|| Failure::null("conf"))?;
        // SAFETY: NULL or NUL-terminated (the caller's contract).
        let name = unsafe { arg_str(name, "name") }?;
        if value.is_null() {
            return Err(Failure::null(&format!("value (of {name})")));
        }
        // SAFETY: not NULL and NUL-terminated (the caller's contract).
        let value = unsafe { CStr::from_ptr(value) };
        conf.set(name, value)
    })
}

/// A copy of `conf`, to be released with `switchyard_conf_free`; NULL when `conf` is NULL
/// (`SWITCHYARD_NULL_POINTER` in the last-error message).
///
/// Thread safety: may be called from any thread, not while another thread sets `conf`.
///
/// # Safety
///
/// `conf` must be NULL or a live conf.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_conf_dup(conf: *const switchyard_conf) -> *mut switchyard_conf {
    guard_value(std::ptr::null_mut(), || {
        // SAFETY: checked for NULL; liveness is the caller's contract.
        let conf = unsafe { arg_ref(conf, "conf") }?;
        Ok(into_handle(conf.clone()))
    })
}

/// Releases `conf`. The clients, producers and consumers made with it do not need it: they
/// copied what they use. NULL is a no-op.
///
/// Thread safety: call it once, when no other thread uses this conf.
///
/// # Safety
///
/// `conf` must be NULL or a conf not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn switchyard_conf_free(conf: *mut switchyard_conf) {
    guard_value((), || {
        // SAFETY: NULL or a handle from `into_handle`, freed once (the caller's contract).
        drop(unsafe { from_handle(conf) });
        Ok(())
    })
}

/// The conf argument of a `_conf` entry point: NULL means all defaults.
///
/// # Safety
///
/// `conf` must be NULL or a live conf.
pub(crate) unsafe fn arg_conf<'a>(conf: *const switchyard_conf) -> Option<&'a switchyard_conf> {
    // SAFETY: NULL or live (the caller's contract).
    unsafe { conf.as_ref() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::switchyard_result::*;
    use std::ffi::CString;

    fn set(conf: &mut switchyard_conf, name: &str, value: &str) -> Result<(), Failure> {
        conf.set(name, &CString::new(value).unwrap())
    }

    /// A scratch directory, removed on drop.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("switchyard-c-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n";

    #[test]
    fn settings_are_checked_when_set() {
        let mut c = switchyard_conf::default();
        let bad = |r: Result<(), Failure>, needle: &str| {
            let e = r.expect_err(needle);
            assert_eq!(e.code, SWITCHYARD_INVALID_ARGUMENT, "{}", e.message);
            assert!(
                e.message.contains(needle),
                "{:?} lacks {needle:?}",
                e.message
            );
        };
        bad(
            set(&mut c, "switchyard.nope", "1"),
            "unknown Switchyard setting",
        );
        bad(
            set(&mut c, "switchyard.initial.timeout.ms", "ten"),
            "switchyard.initial.timeout.ms must be a whole number of milliseconds",
        );
        bad(
            set(&mut c, "switchyard.initial.timeout.ms", "-1"),
            "from 0 to 2147483647",
        );
        bad(
            set(&mut c, "switchyard.watch.stall.timeout.ms", "99"),
            "from 100 to 3600000",
        );
        bad(
            set(&mut c, "switchyard.auto.commit", "yes"),
            "true or false",
        );
        bad(set(&mut c, "switchyard.max.in.flight", "0"), "from 1 to");
        bad(set(&mut c, "switchyard.client.id", ""), "non-empty");
        bad(
            set(&mut c, "Linger.MS", "5"),
            "property key \"Linger.MS\" is malformed",
        );
        bad(set(&mut c, "linger..ms", "5"), "malformed");
        bad(set(&mut c, "bootstrap.servers", "h:1"), "config service");
        bad(set(&mut c, "switchyard.ca.pem", "not pem"), "no PEM block");
        bad(
            set(&mut c, "switchyard.certificate.pem", KEY),
            "CERTIFICATE",
        );
        bad(set(&mut c, "switchyard.key.pem", CERT), "PRIVATE KEY");
        bad(
            set(&mut c, "switchyard.ca.location", "/nonexistent/ca.pem"),
            "cannot read /nonexistent/ca.pem",
        );
        bad(set(&mut c, "switchyard.ca.location", ""), "empty");
        // Nothing of the above was recorded.
        assert!(c.settings.is_empty() && c.properties.is_empty());

        set(&mut c, "switchyard.initial.timeout.ms", "2500").unwrap();
        set(&mut c, "linger.ms", "5").unwrap();
        set(&mut c, "linger.ms", "7").unwrap();
        set(&mut c, "switchyard.ca.pem", CERT).unwrap();
        let s = c.client_settings().unwrap();
        assert_eq!(s.initial_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(s.properties["linger.ms"], "7");
        assert_eq!(s.ca_pem.as_deref(), Some(CERT.as_bytes()));
    }

    #[test]
    fn pem_files_are_read_and_checked_when_set() {
        let dir = Dir::new("conf-pem");
        let ca = dir.0.join("ca.pem");
        let junk = dir.0.join("junk.pem");
        std::fs::write(&ca, CERT).unwrap();
        std::fs::write(&junk, "hello").unwrap();
        let mut c = switchyard_conf::default();
        let e = set(&mut c, "switchyard.ca.location", junk.to_str().unwrap()).unwrap_err();
        assert!(
            e.message.contains("junk.pem") && e.message.contains("no PEM block"),
            "{}",
            e.message
        );
        set(&mut c, "switchyard.ca.location", ca.to_str().unwrap()).unwrap();
        // The file was read when set: removing it changes nothing.
        std::fs::remove_file(&ca).unwrap();
        assert_eq!(
            c.client_settings().unwrap().ca_pem.as_deref(),
            Some(CERT.as_bytes())
        );
    }

    #[test]
    fn a_conf_is_refused_by_another_kind_of_object() {
        let mut c = switchyard_conf::default();
        set(&mut c, "compression.type", "lz4").unwrap();
        set(&mut c, "switchyard.max.cut.off.hold.ms", "500").unwrap();
        let e = c.client_settings().unwrap_err();
        assert_eq!(e.code, SWITCHYARD_INVALID_ARGUMENT);
        assert!(
            e.message
                .contains("switchyard.max.cut.off.hold.ms is a producer setting")
                && e.message.contains("switchyard_client_connect_conf"),
            "{}",
            e.message
        );
        assert!(c.consumer_options().is_err());
        let (o, cap) = c.producer_settings().unwrap();
        assert_eq!(o.max_cut_off_hold, Duration::from_millis(500));
        assert_eq!(o.properties["compression.type"], "lz4");
        assert_eq!(cap, SWITCHYARD_MAX_IN_FLIGHT);

        let mut k = switchyard_conf::default();
        set(&mut k, "switchyard.auto.commit", "true").unwrap();
        assert!(k.consumer_options().unwrap().auto_commit);
        assert!(k.producer_settings().is_err());
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let mut c = switchyard_conf::default();
        set(&mut c, "switchyard.certificate.pem", CERT).unwrap();
        let e = c.client_settings().unwrap_err();
        assert!(e.message.contains("needs its private key"), "{}", e.message);
        set(&mut c, "switchyard.key.pem", KEY).unwrap();
        let s = c.client_settings().unwrap();
        assert!(s.identity.is_some());
    }

    #[test]
    fn the_c_functions_check_their_pointers() {
        // SAFETY: NULL pointers and live, NUL-terminated strings, as the functions allow.
        unsafe {
            assert_eq!(
                switchyard_conf_set(std::ptr::null_mut(), c"linger.ms".as_ptr(), c"5".as_ptr()),
                SWITCHYARD_NULL_POINTER
            );
            let c = switchyard_conf_new();
            assert!(!c.is_null());
            assert_eq!(
                switchyard_conf_set(c, std::ptr::null(), c"5".as_ptr()),
                SWITCHYARD_NULL_POINTER
            );
            assert_eq!(
                switchyard_conf_set(c, c"linger.ms".as_ptr(), std::ptr::null()),
                SWITCHYARD_NULL_POINTER
            );
            assert_eq!(
                switchyard_conf_set(c, c"linger.ms".as_ptr(), c"5".as_ptr()),
                SWITCHYARD_OK
            );
            let d = switchyard_conf_dup(c);
            assert!(!d.is_null());
            assert_eq!((&*d).properties["linger.ms"], "5");
            assert!(switchyard_conf_dup(std::ptr::null()).is_null());
            switchyard_conf_free(c);
            switchyard_conf_free(d);
            switchyard_conf_free(std::ptr::null_mut());
        }
    }
}
