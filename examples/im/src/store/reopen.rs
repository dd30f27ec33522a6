//! The embedded store's database file, closed and opened again after an I/O error.
//!
//! redb latches the first I/O error it meets (a full disk, say): every later operation on
//! that `Database`, reads included, fails with "previous I/O error" until it is closed and
//! opened again. So [`DbFile`] holds the open database for the readers and the committer,
//! and after a failed batch the committer calls [`DbFile::reopen`], with a backoff, until
//! the file opens and a [`probe`] write of a megabyte goes through: the cause is gone.
//! Nothing acknowledged is lost on the way (a batch is acknowledged only once committed),
//! and the process is not restarted.

use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};

use super::StoreError;

/// Opens the database (the file, or in tests a backend that fails on demand).
pub(super) type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// Written and deleted by [`probe`].
const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");

/// Bytes a probe writes: enough that the file must find room for them.
const PROBE_BYTES: usize = 1 << 20;

/// The open database, shared by readers and the committer.
pub(super) struct DbFile {
    open: Opener,
    db: RwLock<Option<Arc<Database>>>,
}

impl DbFile {
    /// Opens it.
    pub(super) fn open(open: Opener) -> Result<DbFile, StoreError> {
        let db = open()?;
        Ok(DbFile {
            open,
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    /// The database, unless it is being opened again.
    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError("the store is being reopened after an I/O error".into()))
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

/// Writes a megabyte and deletes it, in two commits: whether writes that need room work.
pub(super) fn probe(db: &Database) -> Result<(), StoreError> {
    let err = |e: redb::Error| StoreError(format!("probe write: {e}"));
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    txn.open_table(PROBE)
        .map_err(|e| err(e.into()))?
        .insert("probe", vec![0u8; PROBE_BYTES].as_slice())
        .map_err(|e| err(e.into()))?;
    txn.commit().map_err(|e| err(e.into()))?;
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    txn.delete_table(PROBE).map_err(|e| err(e.into()))?;
    txn.commit().map_err(|e| err(e.into()))
}
