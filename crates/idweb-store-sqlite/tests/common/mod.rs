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

pub mod fixture;

/// The number of transactions committed in the database's write-ahead log
/// since the log was last restarted: its valid frames that end a commit.
/// (A WAL frame header holds, at bytes 4..8, the database size after the
/// commit for the last frame of a transaction and zero for the others; at
/// 8..16, the log's salts, which change when the log restarts.)
pub fn wal_commits(path: &Path) -> usize {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let Ok(bytes) = std::fs::read(PathBuf::from(wal)) else {
        return 0;
    };
    let Some(header) = bytes.get(..32) else {
        return 0;
    };
    let page_size = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
    let salts = &header[16..24];
    let mut commits = 0;
    let mut offset = 32;
    while let Some(frame) = bytes.get(offset..offset + 24 + page_size) {
        if &frame[8..16] != salts {
            break;
        }
        if frame[4..8] != [0, 0, 0, 0] {
            commits += 1;
        }
        offset += 24 + page_size;
    }
    commits
}
