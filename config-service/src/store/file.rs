//! The embedded durable store: an append-only log of versions in one file.
//!
//! Layout of `DIR/versions.log`: a sequence of frames `[len: u32 LE][crc32: u32 LE][payload]`,
//! where the payload is a protobuf `LogRecord`. The first frame holds a full snapshot (the oldest
//! retained version); every later frame holds the delta to the next version. A commit is
//! acknowledged only after its frame is written and `fdatasync`ed. On open, a frame that is
//! short or fails its checksum — the tail a `kill -9` or power loss tears — is cut off, and the
//! store resumes at the last complete version. Compaction rewrites the file with a newer base
//! into a temporary file, syncs it and renames it over the log, so a crash at any point leaves
//! either the old or the new log.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use prost::Message;
use switchyard_proto::state::State;
use switchyard_proto::v1::Delta;

use super::{History, HistoryItem, Store, StoreError};

const LOG: &str = "versions.log";
const LOG_TMP: &str = "versions.log.compact";
const LOCK: &str = "LOCK";
/// Largest frame accepted on read: a torn length field must not make us allocate gigabytes.
const MAX_FRAME: u32 = 1 << 30;

#[derive(Clone, PartialEq, prost::Message)]
struct LogRecord {
    #[prost(oneof = "log_record::Body", tags = "1, 2")]
    body: Option<log_record::Body>,
}

mod log_record {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Body {
        #[prost(message, tag = "1")]
        Base(switchyard_proto::v1::Snapshot),
        #[prost(message, tag = "2")]
        Delta(switchyard_proto::v1::Delta),
    }
}

/// A crash-safe, file-backed [`Store`] in a data directory owned by one process.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    retain: usize,
    inner: Mutex<Inner>,
    _lock: File,
}

#[derive(Debug)]
struct Inner {
    history: History,
    file: File,
    len: u64,
    /// Set when a failed write could not be rolled back; all later writes fail.
    broken: bool,
}

/// What recovery found when opening a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from a torn or corrupt tail.
    pub truncated_bytes: u64,
    /// Versions read.
    pub versions: usize,
}

impl FileStore {
    /// Opens (or creates) the store in `dir`, recovering a torn tail. Keeps at least `retain`
    /// versions of history. Fails if another process holds the directory.
    pub fn open(dir: impl AsRef<Path>, retain: usize) -> Result<(Self, Recovery), StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Io(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "data directory {} is in use by another process",
                        dir.display()
                    ),
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        // A leftover temporary file is an unfinished compaction; the log is authoritative.
        let _ = std::fs::remove_file(dir.join(LOG_TMP));
        let path = dir.join(LOG);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let (history, good_len, recovery) = read_log(&mut file)?;
        let history = match history {
            Some(h) => h,
            None => {
                // New (or entirely torn) log: start at the empty version 0.
                let h = History::new(State::default());
                file.set_len(0)?;
                file.seek(SeekFrom::Start(0))?;
                let frame = frame(&LogRecord {
                    body: Some(log_record::Body::Base(h.base().to_snapshot())),
                });
                file.write_all(&frame)?;
                file.sync_all()?;
                sync_dir(&dir)?;
                let len = frame.len() as u64;
                let store = Self {
                    dir,
                    retain: retain.max(1),
                    inner: Mutex::new(Inner {
                        history: h,
                        file,
                        len,
                        broken: false,
                    }),
                    _lock: lock,
                };
                return Ok((store, recovery));
            }
        };
        if recovery.truncated_bytes > 0 {
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(good_len))?;
        let store = Self {
            dir,
            retain: retain.max(1),
            inner: Mutex::new(Inner {
                history,
                file,
                len: good_len,
                broken: false,
            }),
            _lock: lock,
        };
        Ok((store, recovery))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn compact(&self, inner: &mut Inner) -> Result<(), StoreError> {
        let mut h = inner.history.clone();
        h.compact(self.retain)?;
        let tmp = self.dir.join(LOG_TMP);
        let mut out = File::create(&tmp)?;
        let mut buf = frame(&LogRecord {
            body: Some(log_record::Body::Base(h.base().to_snapshot())),
        });
        for d in h.deltas() {
            buf.extend_from_slice(&frame(&LogRecord {
                body: Some(log_record::Body::Delta((**d).clone())),
            }));
        }
        out.write_all(&buf)?;
        out.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(LOG))?;
        sync_dir(&self.dir)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(LOG))?;
        file.seek(SeekFrom::End(0))?;
        inner.file = file;
        inner.len = buf.len() as u64;
        inner.history = h;
        Ok(())
    }
}

impl Store for FileStore {
    fn latest(&self) -> Arc<State> {
        self.inner.lock().history.latest().clone()
    }

    fn commit(&self, expected: u64, next: State, delta: Delta) -> Result<Arc<State>, StoreError> {
        let mut inner = self.inner.lock();
        let current = inner.history.latest().version;
        if current != expected {
            return Err(StoreError::Conflict { expected, current });
        }
        if inner.broken {
            return Err(StoreError::Io(io::Error::other(
                "an earlier write failed and could not be rolled back; restart the service",
            )));
        }
        let buf = frame(&LogRecord {
            body: Some(log_record::Body::Delta(delta.clone())),
        });
        let start = inner.len;
        let written = inner
            .file
            .write_all(&buf)
            .and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            // Undo the partial frame so the log stays a sequence of acknowledged versions.
            let undo = inner
                .file
                .set_len(start)
                .and_then(|()| inner.file.seek(SeekFrom::Start(start)).map(|_| ()))
                .and_then(|()| inner.file.sync_data());
            if undo.is_err() {
                inner.broken = true;
            }
            return Err(e.into());
        }
        inner.len += buf.len() as u64;
        let next = Arc::new(next);
        inner.history.push(Arc::new(delta), next.clone());
        // On failure the version is still durable in the old log; compaction retries later.
        if inner.history.len() > self.retain.saturating_mul(2)
            && let Err(e) = self.compact(&mut inner)
        {
            tracing::warn!(error = %e, "compaction failed");
        }
        Ok(next)
    }

    fn get(&self, version: u64) -> Result<Arc<State>, StoreError> {
        self.inner.lock().history.get(version)
    }

    fn history(&self, before: u64, limit: usize) -> Vec<HistoryItem> {
        self.inner.lock().history.history(before, limit)
    }

    fn deltas_since(&self, known: u64) -> Option<Vec<Arc<Delta>>> {
        self.inner.lock().history.since(known)
    }

    fn oldest(&self) -> u64 {
        self.inner.lock().history.base().version
    }
}

fn frame(rec: &LogRecord) -> Vec<u8> {
    let payload = rec.encode_to_vec();
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads every complete frame; returns the history, the length of the good prefix and what was
/// cut. A frame that does not decode or does not follow the previous version ends the log.
fn read_log(file: &mut File) -> Result<(Option<History>, u64, Recovery), StoreError> {
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut data)?;
    let mut pos = 0usize;
    let mut history: Option<History> = None;
    let mut versions = 0;
    while data.len() - pos >= 8 {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > MAX_FRAME || data.len() - pos - 8 < len as usize {
            break;
        }
        let payload = &data[pos + 8..pos + 8 + len as usize];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(rec) = LogRecord::decode(payload) else {
            break;
        };
        match (rec.body, history.as_mut()) {
            (Some(log_record::Body::Base(s)), None) => {
                history = Some(History::new(State::from_snapshot(s)));
            }
            (Some(log_record::Body::Delta(d)), Some(h)) => {
                if h.replay(d).is_err() {
                    break;
                }
            }
            _ => break,
        }
        versions += 1;
        pos += 8 + len as usize;
    }
    let recovery = Recovery {
        truncated_bytes: (data.len() - pos) as u64,
        versions,
    };
    if recovery.truncated_bytes > 0 {
        tracing::warn!(
            offset = pos,
            bytes = recovery.truncated_bytes,
            "cut a torn or corrupt tail from the version log; resuming at the last complete version"
        );
    }
    Ok((history, pos as u64, recovery))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::v1::{Change, Cluster, change::Op};

    fn next(s: &State, name: &str) -> (State, Delta) {
        let mut n = s
            .apply_changes(&[Change {
                op: Some(Op::UpsertCluster(Cluster {
                    name: name.into(),
                    bootstrap: vec!["127.0.0.1:9092".into()],
                    ..Default::default()
                })),
            }])
            .unwrap();
        n.version = s.version + 1;
        let d = s.delta_to(&n);
        (n, d)
    }

    fn commit(st: &FileStore, name: &str) -> u64 {
        let cur = st.latest();
        let (n, d) = next(&cur, name);
        st.commit(cur.version, n, d).unwrap().version
    }

    #[test]
    fn reopens_with_every_version_and_cuts_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (st, rec) = FileStore::open(dir.path(), 100).unwrap();
            assert_eq!(rec.truncated_bytes, 0);
            for i in 0..5 {
                assert_eq!(commit(&st, &format!("c{i}")), i + 1);
            }
            // Stale CAS changes nothing.
            let cur = st.latest();
            let (n, d) = next(&cur, "x");
            assert!(matches!(
                st.commit(2, n, d),
                Err(StoreError::Conflict {
                    expected: 2,
                    current: 5
                })
            ));
        }
        // Tear the last frame in half, and add garbage.
        let path = dir.path().join(LOG);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        drop(f);
        let (st, rec) = FileStore::open(dir.path(), 100).unwrap();
        assert!(rec.truncated_bytes > 0);
        assert_eq!(st.latest().version, 4);
        assert_eq!(st.get(2).unwrap().clusters.len(), 2);
        assert_eq!(commit(&st, "again"), 5);
        drop(st);
        let (st, rec) = FileStore::open(dir.path(), 100).unwrap();
        assert_eq!(rec.truncated_bytes, 0);
        assert_eq!(st.latest().version, 5);
        assert!(st.latest().clusters.contains_key("again"));
    }

    #[test]
    fn compaction_keeps_retained_history_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (st, _) = FileStore::open(dir.path(), 3).unwrap();
        for i in 0..20 {
            commit(&st, &format!("c{i}"));
        }
        assert_eq!(st.latest().version, 20);
        assert!(st.oldest() >= 14, "oldest {}", st.oldest());
        assert!(matches!(st.get(1), Err(StoreError::NotRetained { .. })));
        assert_eq!(st.get(18).unwrap().clusters.len(), 18);
        drop(st);
        let (st, _) = FileStore::open(dir.path(), 3).unwrap();
        assert_eq!(st.latest().version, 20);
        assert_eq!(st.latest().clusters.len(), 20);
        assert_eq!(st.get(st.oldest()).unwrap().version, st.oldest());
    }

    #[test]
    fn second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_st, _) = FileStore::open(dir.path(), 3).unwrap();
        let err = FileStore::open(dir.path(), 3).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
