//! nimbus-storage: the whole cloud's state, in one redb file, behind a dedicated writer thread.
//!
//! # Layout
//! - [`Store`]: owns the redb `Database`. Writes are closures sent to the writer thread, which runs many of
//!   them in one transaction and commits once (group commit); every caller is answered only after the
//!   commit is durable. A closure that returns `Err` has its own writes undone without disturbing the others.
//!   Reads are MVCC snapshots taken on the caller's thread.
//! - [`Table`] / [`Index`]: typed handles on redb tables (one record per key) and multimap tables (secondary
//!   indexes). Keys are [`KeyCodec`]s, values are versioned [`Record`]s (a version byte, then bincode).
//! - [`Watch`]: the keys later commits write to some tables, for caches kept in step with them.
//! - [`schema`]: every table nimbus has, the schema version and the check made on open.
//! - [`records`]: the persisted data model; [`keys`]: how the typed ids (`nimbus-protocol`'s) and [`Pair`]s are
//!   keys.
//!
//! This is the only crate that knows redb.

mod codec;
mod error;
pub mod keys;
pub mod records;
pub mod schema;
mod store;
mod table;
mod watch;

pub use codec::{KeyCodec, Record};
pub use error::StoreError;
pub use keys::{NetworkChoice, NetworkOwner, NewestFirst, Pair};
pub use store::{Store, StoreStats};
pub use table::{Index, ReadTx, Reads, Table, WriteTx};
pub use watch::Watch;
