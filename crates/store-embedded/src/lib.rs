//! [`EmbeddedStore`]: the [`StateStore`] on an embedded, crash-safe database.
//!
//! The store keeps its keys and a bounded log of recent revisions in one
//! [redb](https://www.redb.org) file, `{data_dir}/state.redb`, and a copy in
//! memory ([`MemoryStore`] with a [`Journal`]) from which reads and watches
//! are served:
//!
//! - each batch is one redb write transaction, durable (fsync'd) before the
//!   caller is answered and before any reader or watch can see it;
//! - a crash loses no answered batch and leaves no batch in part: redb's
//!   commit is atomic, and the copy in memory is rebuilt from the file on
//!   open;
//! - watches replay from the log kept in the file, so a watcher may resume
//!   from a revision written before a restart; older than the log gives the
//!   same [`StoreError::Compacted`] as etcd;
//! - one process owns the file: a second open fails with
//!   [`OpenError::Locked`], naming the directory.
//!
//! Memory holds every key and value once more than the file does; the
//! StateManager's keys are small and bounded (states, a bounded history per
//! resource, bookkeeping), so this buys reads that never touch the disk.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod codec;
mod journal;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use state_store::{
    Applied, Batch, Journal, ListOptions, MemoryStore, MemoryStoreConfig, Page, Revision,
    StateStore, StoreError, WatchStream,
};

use crate::journal::RedbJournal;

/// The database file inside the data directory.
pub const FILE_NAME: &str = "state.redb";

/// Where and how an [`EmbeddedStore`] keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// The directory that holds the database file; created (mode 0700) when
    /// missing.
    pub data_dir: PathBuf,
    /// Batch size limit, page size, watch buffers and the length of the
    /// revision log ([`MemoryStoreConfig::history_limit`] events), as for
    /// the in-memory store.
    pub limits: MemoryStoreConfig,
    /// The database's page cache in bytes. Reads are served from memory, so
    /// the cache only serves writes and the load at open.
    pub cache_size: usize,
}

impl EmbeddedConfig {
    /// The defaults for a data directory: etcd's limits, a 10,000-event
    /// revision log and a 16 MiB cache.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            limits: MemoryStoreConfig::default(),
            cache_size: 16 << 20,
        }
    }
}

/// Why an [`EmbeddedStore`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (or another store in this one) has the database open.
    #[error(
        "the data directory {dir} is in use: another process has {FILE_NAME} open \
         (stop it, or give this one another data directory)"
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// The data directory could not be created or opened.
    #[error("cannot use the data directory {dir}: {source}")]
    Dir {
        /// The data directory.
        dir: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or read.
    #[error("cannot open the database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::Error,
    },
    /// The database holds something this version cannot read.
    #[error("the database {path} is not a StateManager store this version can read: {message}")]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The [`StateStore`] on an embedded database file. Clones share the store.
#[derive(Clone)]
pub struct EmbeddedStore {
    memory: MemoryStore,
    path: Arc<PathBuf>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `config.data_dir` and loads it.
    ///
    /// Blocking: reads the whole file. Call it before serving, or from
    /// `spawn_blocking`.
    pub fn open(config: EmbeddedConfig) -> Result<Self, OpenError> {
        let dir = config.data_dir.clone();
        create_dir(&dir)?;
        let path = dir.join(FILE_NAME);
        let (journal, restored) = RedbJournal::open(&path, &dir, config.cache_size)?;
        tracing::debug!(
            path = %path.display(),
            revision = restored.revision,
            keys = restored.kvs.len(),
            "embedded store opened"
        );
        let journal: Arc<dyn Journal> = Arc::new(journal);
        Ok(Self {
            memory: MemoryStore::with_journal(config.limits, restored, journal),
            path: Arc::new(path),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn create_dir(dir: &Path) -> Result<(), OpenError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| OpenError::Dir {
        dir: dir.to_owned(),
        source,
    })
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .field("memory", &self.memory)
            .finish()
    }
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<state_store::KeyValue>, StoreError> {
        self.memory.get(key).await
    }

    async fn get_prefix(&self, prefix: &str, options: ListOptions) -> Result<Page, StoreError> {
        self.memory.get_prefix(prefix, options).await
    }

    async fn apply(&self, batch: Batch) -> Result<Applied, StoreError> {
        self.memory.apply(batch).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.memory.delete(key).await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.memory.watch(prefix, from_revision).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.memory.revision().await
    }
}
