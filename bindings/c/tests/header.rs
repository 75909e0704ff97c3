//! The checked-in C header must be what cbindgen generates from the current source.
//!
//! Regenerate it with `SWITCHYARD_BLESS=1 cargo test -p switchyard-c --test header`.

use std::path::Path;

#[test]
fn checked_in_header_matches_the_source() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = dir.join("include/switchyard.h");
    if std::env::var_os("SWITCHYARD_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let current = std::fs::read(&path).unwrap_or_default();
    if current != generated {
        let now = String::from_utf8_lossy(&generated);
        let old = String::from_utf8_lossy(&current);
        let first = now
            .lines()
            .zip(old.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| now.lines().count().min(old.lines().count()));
        panic!(
            "{} is stale (first difference at line {}).\n\
             Regenerate it with: SWITCHYARD_BLESS=1 cargo test -p switchyard-c --test header\n\
             expected: {:?}\n   found: {:?}",
            path.display(),
            first + 1,
            now.lines().nth(first).unwrap_or("<end of file>"),
            old.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}
