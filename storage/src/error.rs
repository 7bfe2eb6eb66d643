//! The storage error type.

/// What can go wrong in the store. Callers usually wrap it into their own error as a `#[source]`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Redb(#[source] Box<redb::Error>),
    #[error("cannot encode a {kind} record")]
    Encode {
        kind: &'static str,
        #[source]
        source: bincode::error::EncodeError,
    },
    #[error("cannot decode a {kind} record")]
    Decode {
        kind: &'static str,
        #[source]
        source: bincode::error::DecodeError,
    },
    #[error("a {kind} record has version {found}, this nimbus reads up to version {supported}")]
    RecordFromNewerVersion { kind: &'static str, found: u8, supported: u8 },
    #[error("a {kind} record has version {found}, which this nimbus cannot read")]
    UnknownRecordVersion { kind: &'static str, found: u8 },
    #[error("an empty {kind} record")]
    EmptyRecord { kind: &'static str },
    #[error("malformed key in table {table}")]
    BadKey { table: &'static str },
    #[error(
        "the data file {path} has schema version {found}, this nimbus supports up to {supported}; \
         run a newer nimbus or restore an older backup"
    )]
    NewerSchema { path: String, found: u32, supported: u32 },
    #[error("the data file {path} is already open in another nimbus process")]
    AlreadyOpen { path: String },
    #[error("the commit holding this write failed: {0}")]
    CommitFailed(String),
    #[error("the store's writer thread is gone (the store was shut down or a write panicked)")]
    WriterGone,
    #[error("cannot create the data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn redb(e: impl Into<redb::Error>) -> Self {
        StoreError::Redb(Box::new(e.into()))
    }
}

/// Lets `?` work on every redb error kind inside this crate.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::redb(e) }
        }
    )*};
}
from_redb!(redb::StorageError, redb::TableError, redb::TransactionError, redb::CommitError, redb::SetDurabilityError);
