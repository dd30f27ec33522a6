//! The embedded store's database file, closed and opened again after an I/O error.
//!
//! redb latches the first I/O error it meets (a full disk, say): every later operation on
//! that `Database`, reads included, fails with "previous I/O error" until it is closed and
//! opened again. So [`DbFile`] holds the open database for the readers and the committer.
//! After a failed batch the committer tries to reopen it at once, and then after a backoff
//! while that fails (redb repairs a file closed after an error as it opens it, which needs
//! room: until then reads fail too). Writes stay refused, without touching the file, until
//! the [`DbFile::probe`] (a megabyte written beside it, not in it, so that a failure does
//! not latch the database again) goes through: the cause is gone. Nothing acknowledged is lost on the way (a batch is acknowledged only once
//! committed), and the process is not restarted.

use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use std::io::Write;
use std::path::Path;

use redb::Database;

use super::StoreError;

/// Opens the database (the file, or in tests a backend that fails on demand).
pub(super) type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// Whether writes that need room would work now (see [`probe_dir`]).
pub(super) type Prober = Box<dyn Fn() -> Result<(), StoreError> + Send + Sync>;

/// Bytes a probe writes: enough that the file system must find room for them.
const PROBE_BYTES: usize = 1 << 20;

/// The open database, shared by readers and the committer.
pub(super) struct DbFile {
    open: Opener,
    probe: Prober,
    db: RwLock<Option<Arc<Database>>>,
}

impl DbFile {
    /// Opens it.
    pub(super) fn open(open: Opener, probe: Prober) -> Result<DbFile, StoreError> {
        let db = open()?;
        Ok(DbFile {
            open,
            probe,
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    /// Whether writes that need room would work now.
    pub(super) fn probe(&self) -> Result<(), StoreError> {
        (self.probe)()
    }

    /// The database, unless it is being opened again.
    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::new("the store is being reopened after an I/O error"))
    }

    /// Closes the database and opens it again. Readers hold it for the length of a read:
    /// the old one is closed once they let go (redb's file lock refuses a second open
    /// before, and the caller tries again later).
    pub(super) fn reopen(&self) -> Result<Arc<Database>, StoreError> {
        let old = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(old) = old {
            let until = Instant::now() + Duration::from_secs(1);
            while Arc::strong_count(&old) > 1 && Instant::now() < until {
                thread::sleep(Duration::from_millis(1));
            }
        }
        let db = Arc::new((self.open)()?);
        *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db.clone());
        Ok(db)
    }
}

/// Writes a megabyte to a file in `dir`, syncs it and deletes it: whether the file system
/// there has room again, without touching the database (a failed write would latch it).
pub(super) fn probe_dir(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join("probe.tmp");
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    written.map_err(|e| StoreError::wrap(format!("probe write in {}", dir.display()), e))
}
