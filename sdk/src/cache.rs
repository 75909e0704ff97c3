//! Last-known-good snapshot cache: every applied snapshot is written atomically so that a
//! process can start, and keep working, while the config service is down.
//!
//! File format: `SWYD` magic, format version byte, CRC32 (LE) of the payload, then the
//! protobuf `Snapshot`. A file that fails any check is reported and never applied.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use switchyard_proto::state::State;
use switchyard_proto::v1::Snapshot;
use switchyard_proto::validate;

use crate::error::Error;

const MAGIC: &[u8; 4] = b"SWYD";
const FORMAT: u8 = 1;

/// Reads and writes one cache file.
#[derive(Debug, Clone)]
pub struct SnapshotCache {
    path: PathBuf,
}

impl SnapshotCache {
    /// A cache at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Cache {
            path: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Loads the cached snapshot: `Ok(None)` if there is no file; an error if it is corrupt or
    /// fails validation.
    pub fn load(&self) -> Result<Option<State>, Error> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(format!("unreadable: {e}"))),
        };
        if data.len() < 9 || &data[..4] != MAGIC {
            return Err(self.err("not a Switchyard snapshot cache (bad magic)"));
        }
        if data[4] != FORMAT {
            return Err(self.err(format!("unsupported cache format {}", data[4])));
        }
        let crc = u32::from_le_bytes([data[5], data[6], data[7], data[8]]);
        let payload = &data[9..];
        if crc32fast::hash(payload) != crc {
            return Err(self.err("checksum mismatch (corrupt or truncated)"));
        }
        let snap = Snapshot::decode(payload).map_err(|e| self.err(format!("undecodable: {e}")))?;
        let state = State::from_snapshot(snap);
        validate::check_state(&state).map_err(|e| self.err(format!("invalid snapshot: {e}")))?;
        Ok(Some(state))
    }

    /// Writes `state` atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn store(&self, state: &State) -> Result<(), Error> {
        let payload = state.to_snapshot().encode_to_vec();
        let mut buf = Vec::with_capacity(payload.len() + 9);
        buf.extend_from_slice(MAGIC);
        buf.push(FORMAT);
        buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        buf.extend_from_slice(&payload);
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| self.err(format!("cannot create directory: {e}")))?;
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.err(format!("write failed: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_proto::v1::{Change, Cluster, change::Op};

    #[test]
    fn round_trip_and_corruption_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = SnapshotCache::new(dir.path().join("app.snapshot"));
        assert!(c.load().unwrap().is_none());
        let mut s = State::default()
            .apply_changes(&[Change {
                op: Some(Op::UpsertCluster(Cluster {
                    name: "east".into(),
                    bootstrap: vec!["127.0.0.1:9092".into()],
                    ..Default::default()
                })),
            }])
            .unwrap();
        s.version = 7;
        c.store(&s).unwrap();
        assert_eq!(c.load().unwrap().unwrap(), s);
        let mut data = std::fs::read(c.path()).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        std::fs::write(c.path(), &data).unwrap();
        let e = c.load().unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        std::fs::write(c.path(), b"garbage").unwrap();
        assert!(c.load().is_err());
    }
}
