//! Per-application client tokens (`serve --client-tokens FILE`).
//!
//! The file holds no secret: each line maps an app to the SHA-256 of its token, in hex:
//!
//! ```text
//! # app        sha256(token), 64 hex digits
//! checkout     6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b
//! ```
//!
//! Blank lines and lines starting with `#` are ignored. Each app appears once and each hash
//! once; an app name follows the same rules as profile app names. `switchyard token new --app A`
//! mints a random token and prints the line to add. A presented token is hashed and compared
//! with every entry in constant time. The file is re-read on [`ClientTokens::reload`] (the
//! `serve` command calls it on SIGHUP); a file that fails to parse leaves the previous table in
//! place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;
use switchyard_proto::validate;

/// Bytes of randomness in a minted token.
const TOKEN_BYTES: usize = 32;
/// Prefix of minted tokens (tells a client token apart in a config file or a leak scanner).
pub const TOKEN_PREFIX: &str = "syc_";

/// Why a client-tokens file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("could not read client tokens file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file has no entries.
    #[error("{path}: no client tokens (expected lines `APP SHA256-HEX`)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// One app's token hash.
#[derive(Clone)]
struct Entry {
    app: String,
    hash: [u8; 32],
}

/// A parsed client-tokens file.
#[derive(Clone, Default)]
pub struct TokenTable {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTable")
            .field(
                "apps",
                &self.entries.iter().map(|e| &e.app).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// SHA-256 of `token`.
pub fn hash_token(token: &str) -> [u8; 32] {
    let d = digest(&SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Result<[u8; 32], String> {
    if s.len() != 64 {
        return Err(format!(
            "the SHA-256 must be 64 hex digits, got {} characters",
            s.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        match (d(pair[0]), d(pair[1])) {
            (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
            _ => {
                return Err(format!(
                    "the SHA-256 is not hex: bad digit near position {}",
                    i * 2 + 1
                ));
            }
        }
    }
    Ok(out)
}

impl TokenTable {
    /// Parses the text of a client-tokens file (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, TokenFileError> {
        let err = |line: usize, message: String| TokenFileError::Line {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen_line: Vec<usize> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let mut parts = l.split_whitespace();
            let (Some(app), Some(h), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err(
                    n,
                    "expected `APP SHA256-HEX` (two fields separated by spaces)".into(),
                ));
            };
            validate::check_name("app", app).map_err(|e| err(n, e.to_string()))?;
            let hash = unhex(h).map_err(|m| err(n, format!("app {app:?}: {m}")))?;
            if let Some(j) = entries.iter().position(|e| e.app == app) {
                return Err(err(
                    n,
                    format!(
                        "app {app:?} already has a token on line {}; one token per app",
                        seen_line[j]
                    ),
                ));
            }
            if let Some(j) = entries.iter().position(|e| e.hash == hash) {
                return Err(err(
                    n,
                    format!(
                        "the same token hash is already used by app {:?} on line {}",
                        entries[j].app, seen_line[j]
                    ),
                ));
            }
            entries.push(Entry {
                app: app.to_string(),
                hash,
            });
            seen_line.push(n);
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self { entries })
    }

    /// Reads and parses a client-tokens file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The app whose token this is. Compares the token's hash with every entry in constant
    /// time.
    pub fn app_of(&self, token: &str) -> Option<&str> {
        self.app_of_hash(&hash_token(token))
    }

    /// The app whose token has SHA-256 `h`, compared with every entry in constant time.
    pub fn app_of_hash(&self, h: &[u8; 32]) -> Option<&str> {
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(h)) {
                found = Some(e.app.as_str());
            }
        }
        found
    }

    /// Apps with a token.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.app.as_str())
    }
}

/// The client tokens a server checks, re-readable from their file.
#[derive(Debug)]
pub struct ClientTokens {
    path: PathBuf,
    table: ArcSwap<TokenTable>,
    /// Bumped by every successful reload.
    generation: tokio::sync::watch::Sender<u64>,
}

impl ClientTokens {
    /// Loads `path`; an unreadable or malformed file is an error.
    pub fn open(path: &Path) -> Result<Arc<Self>, TokenFileError> {
        let table = TokenTable::load(path)?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            table: ArcSwap::from_pointee(table),
            generation: tokio::sync::watch::channel(0).0,
        }))
    }

    /// Re-reads the file. On error the previous table stays in force. Returns the number of
    /// apps with a token.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let t = TokenTable::load(&self.path)?;
        let n = t.entries.len();
        self.table.store(Arc::new(t));
        self.generation.send_modify(|g| *g += 1);
        Ok(n)
    }

    /// The app whose token this is.
    pub fn app_of(&self, token: &str) -> Option<String> {
        self.table.load().app_of(token).map(str::to_string)
    }

    /// The app whose token has SHA-256 `hash` (compared in constant time).
    pub fn app_of_hash(&self, hash: &[u8; 32]) -> Option<String> {
        self.table.load().app_of_hash(hash).map(str::to_string)
    }

    /// Changes on every successful reload.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A freshly minted client token and the client-tokens file line that admits it.
#[derive(Debug)]
pub struct Minted {
    /// The token: give it to the application, store it nowhere else.
    pub token: String,
    /// `APP SHA256-HEX`, to add to the client-tokens file.
    pub line: String,
}

/// Mints a random token for `app`.
pub fn mint(app: &str) -> anyhow::Result<Minted> {
    validate::check_name("app", app).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut bytes = [0u8; TOKEN_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let token = format!("{TOKEN_PREFIX}{}", hex(&bytes));
    let line = format!("{app} {}", hex(&hash_token(&token)));
    Ok(Minted { token, line })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TokenTable, String> {
        TokenTable::parse(Path::new("tokens"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn minted_tokens_are_found() {
        let a = mint("checkout").unwrap();
        let b = mint("billing").unwrap();
        assert!(a.token.starts_with(TOKEN_PREFIX));
        let t = parse(&format!("# comment\n\n{}\n  {}  \n", a.line, b.line)).unwrap();
        assert_eq!(t.app_of(&a.token), Some("checkout"));
        assert_eq!(t.app_of(&b.token), Some("billing"));
        assert_eq!(t.app_of("syc_nope"), None);
        assert!(!a.line.contains(&a.token));
    }

    #[test]
    fn bad_files_have_precise_errors() {
        let h = hex(&hash_token("x"));
        let h2 = hex(&hash_token("y"));
        for (text, want) in [
            ("", "tokens: no client tokens"),
            ("# only a comment\n", "tokens: no client tokens"),
            ("checkout\n", "tokens:1: expected `APP SHA256-HEX`"),
            (
                "checkout abc\n",
                "tokens:1: app \"checkout\": the SHA-256 must be 64 hex digits, got 3",
            ),
            (
                &format!("checkout {}zz\n", &h[..62]),
                "tokens:1: app \"checkout\": the SHA-256 is not hex",
            ),
            (
                &format!("a {h}\na {h2}\n"),
                "tokens:2: app \"a\" already has a token on line 1",
            ),
            (
                &format!("a {h}\n\nb {h}\n"),
                "tokens:3: the same token hash is already used by app \"a\" on line 1",
            ),
            (&format!("bad/app {h}\n"), "tokens:1: app:"),
            (&format!("a {h} extra\n"), "tokens:1: expected"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn mint_refuses_a_bad_app() {
        assert!(mint("").is_err());
        assert!(mint("a b").is_err());
    }
}
