//! Helpers shared by the integration tests: database files in the target's
//! temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, SystemTime};

use idweb::SessionId;

/// The directory the test databases live in.
fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("idweb-store-sqlite")
}

/// A fresh database path (the file does not exist yet). Files left by runs
/// more than a day old are deleted on first use.
pub fn db_path(name: &str) -> PathBuf {
    static CLEAN: Once = Once::new();
    let dir = dir();
    CLEAN.call_once(|| {
        let _ = std::fs::create_dir_all(&dir);
        let day_ago = SystemTime::now() - Duration::from_secs(24 * 3600);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < day_ago);
                if old {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    });
    dir.join(format!(
        "{}-{}-{name}.db",
        std::process::id(),
        SessionId::generate().fingerprint()
    ))
}

/// The database file and its `-wal` / `-shm` companions.
pub fn db_files(path: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        })
        .collect()
}

/// Deletes a database file and its companions.
pub fn remove_db(path: &Path) {
    for p in db_files(path) {
        let _ = std::fs::remove_file(p);
    }
}
