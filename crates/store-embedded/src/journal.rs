//! The redb file behind an [`EmbeddedStore`](crate::EmbeddedStore): three
//! tables, written together in one transaction per revision.
//!
//! - `kv`: key → value with its revisions ([`codec::encode_value`]);
//! - `log`: revision → that revision's events, from the compact revision on;
//! - `meta`: `revision`, `compact_revision` and the layout's `format`.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use state_store::{Cause, Journal, JournalEntry, Restored, Revision, StoreError};

use crate::OpenError;
use crate::codec::{self, Malformed};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

const REVISION: &str = "revision";
const COMPACT_REVISION: &str = "compact_revision";
const FORMAT: &str = "format";
/// The layout this code writes; a file with another is refused at open.
const FORMAT_VERSION: i64 = 1;

/// The [`Journal`] on a redb database.
pub struct RedbJournal {
    db: Database,
    path: PathBuf,
}

impl RedbJournal {
    /// Opens or creates the database at `path` (inside `dir`) and reads
    /// everything it holds.
    pub fn open(path: &Path, dir: &Path, cache_size: usize) -> Result<(Self, Restored), OpenError> {
        let existed = path.exists();
        let db = Database::builder()
            .set_cache_size(cache_size)
            .create(path)
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Locked {
                    dir: dir.to_owned(),
                },
                other => OpenError::Database {
                    path: path.to_owned(),
                    source: other.into(),
                },
            })?;
        if !existed {
            // The new file's directory entry must survive a crash too.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| OpenError::Dir {
                    dir: dir.to_owned(),
                    source,
                })?;
        }
        let journal = Self {
            db,
            path: path.to_owned(),
        };
        let restored = journal.initialize().and_then(|()| journal.load())?;
        Ok((journal, restored))
    }

    fn database_error(&self, error: impl Into<redb::Error>) -> OpenError {
        OpenError::Database {
            path: self.path.clone(),
            source: error.into(),
        }
    }

    fn unreadable(&self, message: impl Into<String>) -> OpenError {
        OpenError::Unreadable {
            path: self.path.clone(),
            message: message.into(),
        }
    }

    /// Creates the tables of a new file and checks the layout of an old one.
    fn initialize(&self) -> Result<(), OpenError> {
        let tx = self.db.begin_write().map_err(|e| self.database_error(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.database_error(e))?;
            let format = meta
                .get(FORMAT)
                .map_err(|e| self.database_error(e))?
                .map(|v| v.value());
            match format {
                None => {
                    meta.insert(FORMAT, FORMAT_VERSION)
                        .map_err(|e| self.database_error(e))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(self.unreadable(format!(
                        "layout version {other}; this version reads {FORMAT_VERSION}"
                    )));
                }
            }
            tx.open_table(KV).map_err(|e| self.database_error(e))?;
            tx.open_table(LOG).map_err(|e| self.database_error(e))?;
        }
        tx.commit().map_err(|e| self.database_error(e))
    }

    fn load(&self) -> Result<Restored, OpenError> {
        let tx = self.db.begin_read().map_err(|e| self.database_error(e))?;
        let meta = tx.open_table(META).map_err(|e| self.database_error(e))?;
        let number = |name: &str| -> Result<Option<i64>, OpenError> {
            Ok(meta
                .get(name)
                .map_err(|e| self.database_error(e))?
                .map(|v| v.value()))
        };
        let revision = number(REVISION)?.unwrap_or(1);
        let compact_revision = number(COMPACT_REVISION)?.unwrap_or(0);

        let mut kvs = Vec::new();
        let table = tx.open_table(KV).map_err(|e| self.database_error(e))?;
        for row in table.iter().map_err(|e| self.database_error(e))? {
            let (key, value) = row.map_err(|e| self.database_error(e))?;
            let kv = codec::decode_value(key.value(), value.value())
                .map_err(|Malformed(m)| self.unreadable(format!("key '{}': {m}", key.value())))?;
            if kv.mod_revision > revision {
                return Err(self.unreadable(format!(
                    "key '{}' is at revision {}, after the store's {revision}",
                    kv.key, kv.mod_revision
                )));
            }
            kvs.push(kv);
        }

        let mut log = Vec::new();
        let table = tx.open_table(LOG).map_err(|e| self.database_error(e))?;
        for row in table.iter().map_err(|e| self.database_error(e))? {
            let (at, bytes) = row.map_err(|e| self.database_error(e))?;
            let at = Revision::try_from(at.value())
                .map_err(|_| self.unreadable(format!("log revision {} too large", at.value())))?;
            let events = codec::decode_events(at, bytes.value())
                .map_err(|Malformed(m)| self.unreadable(format!("log revision {at}: {m}")))?;
            log.push((at, events));
        }
        Ok(Restored {
            revision,
            compact_revision,
            kvs,
            log,
        })
    }

    fn write(&self, entry: &JournalEntry<'_>) -> Result<(), redb::Error> {
        let tx = self.db.begin_write()?;
        {
            let mut kv = tx.open_table(KV)?;
            for event in entry.events {
                match event.kind {
                    state_store::EventKind::Put => {
                        let value = codec::encode_value(
                            event.kv.create_revision,
                            entry.revision,
                            &event.kv.value,
                        );
                        kv.insert(event.kv.key.as_str(), value.as_slice())?;
                    }
                    state_store::EventKind::Delete => {
                        kv.remove(event.kv.key.as_str())?;
                    }
                }
            }
            let mut log = tx.open_table(LOG)?;
            let events = codec::encode_events(entry.events)
                .map_err(|Malformed(m)| redb::Error::Io(std::io::Error::other(m)))?;
            log.insert(to_u64(entry.revision), events.as_slice())?;
            let compact = to_u64(entry.compact_revision);
            if compact > 0 {
                log.retain_in(..compact, |_, _| false)?;
            }
            let mut meta = tx.open_table(META)?;
            meta.insert(REVISION, entry.revision)?;
            meta.insert(COMPACT_REVISION, entry.compact_revision)?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Revisions are positive; a negative one (never written) maps to 0.
fn to_u64(revision: Revision) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

impl Journal for RedbJournal {
    fn append(&self, entry: &JournalEntry<'_>) -> Result<(), StoreError> {
        self.write(entry).map_err(|error| StoreError::Unavailable {
            message: format!(
                "writing revision {} to {}: {error}",
                entry.revision,
                self.path.display()
            ),
            source: Some(Cause::new(error)),
        })
    }
}
