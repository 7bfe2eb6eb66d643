//! Typed tables and indexes, and the read and write transactions that use them.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::ops::Bound;

use redb::{MultimapTableDefinition, ReadableMultimapTable, ReadableTable, TableDefinition};

use crate::codec::{KeyCodec, Record, decode_record, encode_record};
use crate::error::StoreError;
use crate::watch::Watcher;

type Raw = &'static [u8];

/// A table holding one record `V` per key `K`.
pub struct Table<K, V> {
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Table { name, _types: PhantomData }
    }
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// A secondary index: many values `V` (usually ids) per key `K`.
pub struct Index<K, V> {
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Index<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Index { name, _types: PhantomData }
    }
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

fn decode_key<K: KeyCodec>(table: &'static str, bytes: &[u8]) -> Result<K, StoreError> {
    K::decode_key(bytes).ok_or(StoreError::BadKey { table })
}

fn get_in<K: KeyCodec, V: Record>(t: &impl ReadableTable<Raw, Raw>, key: &K) -> Result<Option<V>, StoreError> {
    match t.get(key.encode_key().as_slice())? {
        Some(guard) => Ok(Some(decode_record(guard.value())?)),
        None => Ok(None),
    }
}

fn scan_in<K: KeyCodec, V: Record>(
    name: &'static str,
    t: &impl ReadableTable<Raw, Raw>,
) -> Result<Vec<(K, V)>, StoreError> {
    let mut out = Vec::new();
    for entry in t.range::<&[u8]>(..)? {
        let (k, v) = entry?;
        out.push((decode_key(name, k.value())?, decode_record(v.value())?));
    }
    Ok(out)
}

fn scan_prefix_in<K: KeyCodec, V: Record>(
    name: &'static str,
    t: &impl ReadableTable<Raw, Raw>,
    prefix: &[u8],
) -> Result<Vec<(K, V)>, StoreError> {
    let mut out = Vec::new();
    for entry in t.range::<&[u8]>(prefix..)? {
        let (k, v) = entry?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((decode_key(name, k.value())?, decode_record(v.value())?));
    }
    Ok(out)
}

fn scan_from_in<K: KeyCodec, V: Record>(
    name: &'static str,
    t: &impl ReadableTable<Raw, Raw>,
    from: &[u8],
    limit: usize,
) -> Result<Vec<(K, V)>, StoreError> {
    let mut out = Vec::new();
    for entry in t.range::<&[u8]>(from..)?.take(limit) {
        let (k, v) = entry?;
        out.push((decode_key(name, k.value())?, decode_record(v.value())?));
    }
    Ok(out)
}

fn keys_from_in<K: KeyCodec>(
    name: &'static str,
    t: &impl ReadableTable<Raw, Raw>,
    from: &[u8],
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<K>, StoreError> {
    let mut out = Vec::new();
    for entry in t.range::<&[u8]>(from..)? {
        let (k, _) = entry?;
        if !k.value().starts_with(prefix) || out.len() == limit {
            break;
        }
        out.push(decode_key(name, k.value())?);
    }
    Ok(out)
}

fn visit_keys_in<K: KeyCodec>(
    name: &'static str,
    t: &impl ReadableTable<Raw, Raw>,
    prefix: &[u8],
    after: Option<&[u8]>,
    mut visit: impl FnMut(K) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let start = after.map_or(Bound::Included(prefix), Bound::Excluded);
    for entry in t.range::<&[u8]>((start, Bound::Unbounded))? {
        let (k, _) = entry?;
        if !k.value().starts_with(prefix) || !visit(decode_key(name, k.value())?)? {
            break;
        }
    }
    Ok(())
}

fn index_get_in<K: KeyCodec, V: KeyCodec>(
    name: &'static str,
    t: &impl ReadableMultimapTable<Raw, Raw>,
    key: &K,
) -> Result<Vec<V>, StoreError> {
    let mut out = Vec::new();
    for v in t.get(key.encode_key().as_slice())? {
        out.push(decode_key(name, v?.value())?);
    }
    Ok(out)
}

/// The read operations both transaction kinds offer, so lookup helpers work inside either.
pub trait Reads {
    fn get<K: KeyCodec, V: Record>(&self, table: &Table<K, V>, key: &K) -> Result<Option<V>, StoreError>;
    fn scan<K: KeyCodec, V: Record>(&self, table: &Table<K, V>) -> Result<Vec<(K, V)>, StoreError>;
    /// The entries whose encoded key starts with `prefix` (see [`crate::keys::Pair::prefix`]), in key order.
    fn scan_prefix<K: KeyCodec, V: Record>(
        &self,
        table: &Table<K, V>,
        prefix: &[u8],
    ) -> Result<Vec<(K, V)>, StoreError>;
    /// Up to `limit` entries from `from` on, in key order.
    fn scan_from<K: KeyCodec, V: Record>(
        &self,
        table: &Table<K, V>,
        from: &K,
        limit: usize,
    ) -> Result<Vec<(K, V)>, StoreError>;
    /// Up to `limit` keys from `from` on, while they start with `prefix`, without decoding the records.
    fn keys_from<K: KeyCodec, V: Record>(
        &self,
        table: &Table<K, V>,
        from: &K,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<K>, StoreError>;
    /// Hands `visit` the keys that start with `prefix`, in key order, from just after `after` (or from the
    /// first), without decoding the records, until it answers `false`: a page read costs the page.
    fn visit_keys<K: KeyCodec, V: Record>(
        &self,
        table: &Table<K, V>,
        prefix: &[u8],
        after: Option<&K>,
        visit: impl FnMut(K) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;
    fn index_get<K: KeyCodec, V: KeyCodec>(&self, index: &Index<K, V>, key: &K) -> Result<Vec<V>, StoreError>;
}

/// A consistent snapshot of the store.
pub struct ReadTx {
    pub(crate) txn: redb::ReadTransaction,
}

/// Both transaction kinds read the same way; only the table handle types differ.
macro_rules! impl_reads {
    ($tx:ty) => {
        impl Reads for $tx {
            fn get<K: KeyCodec, V: Record>(&self, table: &Table<K, V>, key: &K) -> Result<Option<V>, StoreError> {
                self.table(table.name, |t| get_in(t, key))
            }
            fn scan<K: KeyCodec, V: Record>(&self, table: &Table<K, V>) -> Result<Vec<(K, V)>, StoreError> {
                self.table(table.name, |t| scan_in(table.name, t))
            }
            fn scan_prefix<K: KeyCodec, V: Record>(
                &self,
                table: &Table<K, V>,
                prefix: &[u8],
            ) -> Result<Vec<(K, V)>, StoreError> {
                self.table(table.name, |t| scan_prefix_in(table.name, t, prefix))
            }
            fn scan_from<K: KeyCodec, V: Record>(
                &self,
                table: &Table<K, V>,
                from: &K,
                limit: usize,
            ) -> Result<Vec<(K, V)>, StoreError> {
                self.table(table.name, |t| scan_from_in(table.name, t, &from.encode_key(), limit))
            }
            fn keys_from<K: KeyCodec, V: Record>(
                &self,
                table: &Table<K, V>,
                from: &K,
                prefix: &[u8],
                limit: usize,
            ) -> Result<Vec<K>, StoreError> {
                self.table(table.name, |t| keys_from_in(table.name, t, &from.encode_key(), prefix, limit))
            }
            fn visit_keys<K: KeyCodec, V: Record>(
                &self,
                table: &Table<K, V>,
                prefix: &[u8],
                after: Option<&K>,
                visit: impl FnMut(K) -> Result<bool, StoreError>,
            ) -> Result<(), StoreError> {
                let after = after.map(KeyCodec::encode_key);
                self.table(table.name, |t| visit_keys_in(table.name, t, prefix, after.as_deref(), visit))
            }
            fn index_get<K: KeyCodec, V: KeyCodec>(&self, index: &Index<K, V>, key: &K) -> Result<Vec<V>, StoreError> {
                self.multimap(index.name, |t| index_get_in(index.name, t, key))
            }
        }
    };
}

impl ReadTx {
    fn table<R>(
        &self,
        name: &'static str,
        f: impl FnOnce(&redb::ReadOnlyTable<Raw, Raw>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        f(&self.txn.open_table(TableDefinition::<Raw, Raw>::new(name))?)
    }

    fn multimap<R>(
        &self,
        name: &'static str,
        f: impl FnOnce(&redb::ReadOnlyMultimapTable<Raw, Raw>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        f(&self.txn.open_multimap_table(MultimapTableDefinition::<Raw, Raw>::new(name))?)
    }
}

impl_reads!(ReadTx);

/// The tables of one write transaction, each opened once and kept open for every closure of the batch:
/// opening a table is a lookup in redb's table tree, and closing it writes its root back, which a batch of
/// hundreds of small writes would otherwise do for every read and write.
struct OpenTables<'t> {
    txn: &'t redb::WriteTransaction,
    tables: Handles<redb::Table<'t, Raw, Raw>>,
    multimaps: Handles<redb::MultimapTable<'t, Raw, Raw>>,
}

/// Open handles of one kind, by table name.
struct Handles<T>(RefCell<Vec<(&'static str, T)>>);

impl<T> Handles<T> {
    /// Runs `f` on the named handle, opening it with `open` the first time. The handle is taken out meanwhile,
    /// so `f` may use other tables; using the same one inside `f` opens it a second time, which redb refuses
    /// with an error.
    fn with<R>(
        &self,
        name: &'static str,
        open: impl FnOnce() -> Result<T, StoreError>,
        f: impl FnOnce(&mut T) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let cached = {
            let mut handles = self.0.borrow_mut();
            handles.iter().position(|(n, _)| *n == name).map(|i| handles.swap_remove(i).1)
        };
        let mut handle = match cached {
            Some(handle) => handle,
            None => open()?,
        };
        let out = f(&mut handle);
        self.0.borrow_mut().push((name, handle));
        out
    }
}

impl<'t> OpenTables<'t> {
    fn new(txn: &'t redb::WriteTransaction) -> Self {
        OpenTables { txn, tables: Handles(RefCell::new(Vec::new())), multimaps: Handles(RefCell::new(Vec::new())) }
    }

    fn table<R>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut redb::Table<'t, Raw, Raw>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.tables.with(name, || Ok(self.txn.open_table(TableDefinition::<Raw, Raw>::new(name))?), f)
    }

    fn multimap<R>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut redb::MultimapTable<'t, Raw, Raw>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let open = || Ok(self.txn.open_multimap_table(MultimapTableDefinition::<Raw, Raw>::new(name))?);
        self.multimaps.with(name, open, f)
    }
}

/// What to do to take one write back.
enum Undo {
    Restore { table: &'static str, key: Vec<u8>, old: Option<Vec<u8>> },
    IndexRemove { index: &'static str, key: Vec<u8>, value: Vec<u8> },
    IndexAdd { index: &'static str, key: Vec<u8>, value: Vec<u8> },
}

/// A group-committed write transaction, lent to one caller's closure at a time (a part). Every write of the
/// current part is logged so that the part can be undone on its own when its closure fails, leaving the
/// other callers' writes in the same commit.
pub struct WriteTx<'t> {
    tables: OpenTables<'t>,
    undo: Vec<Undo>,
    /// The tables some watch watches, and the keys the batch wrote to them; the current part's from
    /// `part_written` on.
    watched: Vec<&'static str>,
    written: Vec<(&'static str, Vec<u8>)>,
    part_written: usize,
    /// The watches that start with this batch's commit.
    joined: Vec<Watcher>,
}

/// What a committed batch tells the watches.
pub(crate) struct Told {
    pub(crate) joined: Vec<Watcher>,
    pub(crate) written: Vec<(&'static str, Vec<u8>)>,
}

impl<'t> WriteTx<'t> {
    pub(crate) fn new(txn: &'t redb::WriteTransaction, watched: Vec<&'static str>) -> Self {
        WriteTx {
            tables: OpenTables::new(txn),
            undo: Vec::new(),
            watched,
            written: Vec::new(),
            part_written: 0,
            joined: Vec::new(),
        }
    }

    /// Starts the next caller's part: what it writes is undone alone if its closure fails.
    pub(crate) fn next_part(&mut self) {
        self.undo.clear();
        self.part_written = self.written.len();
    }

    /// Starts a watch with this batch: the keys written from here on to `watcher`'s tables are told to it.
    pub(crate) fn start_watch(&mut self, watcher: Watcher) {
        self.watched.extend_from_slice(watcher.tables());
        self.joined.push(watcher);
    }

    /// Ends the batch: what to tell the watches once it is committed.
    pub(crate) fn into_told(self) -> Told {
        Told { joined: self.joined, written: self.written }
    }

    fn wrote(&mut self, table: &'static str, key: &[u8]) {
        if self.watched.contains(&table) {
            self.written.push((table, key.to_vec()));
        }
    }

    fn table<R>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut redb::Table<'t, Raw, Raw>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.tables.table(name, f)
    }

    fn multimap<R>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut redb::MultimapTable<'t, Raw, Raw>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.tables.multimap(name, f)
    }

    /// Inserts or replaces the record at `key`.
    pub fn put<K: KeyCodec, V: Record>(&mut self, table: &Table<K, V>, key: &K, value: &V) -> Result<(), StoreError> {
        let key = key.encode_key();
        let bytes = encode_record(value)?;
        let old =
            self.table(table.name, |t| Ok(t.insert(key.as_slice(), bytes.as_slice())?.map(|g| g.value().to_vec())))?;
        self.wrote(table.name, &key);
        self.undo.push(Undo::Restore { table: table.name, key, old });
        Ok(())
    }

    /// Removes the record at `key`, returning it.
    pub fn delete<K: KeyCodec, V: Record>(&mut self, table: &Table<K, V>, key: &K) -> Result<Option<V>, StoreError> {
        let key = key.encode_key();
        let old = self.table(table.name, |t| Ok(t.remove(key.as_slice())?.map(|g| g.value().to_vec())))?;
        // Logged before decoding: a record that does not decode must still come back on a rollback.
        let decoded = old.as_deref().map(decode_record).transpose();
        if old.is_some() {
            self.wrote(table.name, &key);
            self.undo.push(Undo::Restore { table: table.name, key, old });
        }
        decoded
    }

    pub fn index_add<K: KeyCodec, V: KeyCodec>(
        &mut self,
        index: &Index<K, V>,
        key: &K,
        value: &V,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.encode_key(), value.encode_key());
        if !self.multimap(index.name, |t| Ok(t.insert(key.as_slice(), value.as_slice())?))? {
            self.undo.push(Undo::IndexRemove { index: index.name, key, value });
        }
        Ok(())
    }

    pub fn index_remove<K: KeyCodec, V: KeyCodec>(
        &mut self,
        index: &Index<K, V>,
        key: &K,
        value: &V,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.encode_key(), value.encode_key());
        if self.multimap(index.name, |t| Ok(t.remove(key.as_slice(), value.as_slice())?))? {
            self.undo.push(Undo::IndexAdd { index: index.name, key, value });
        }
        Ok(())
    }

    /// Takes back every write the current part made, newest first.
    pub(crate) fn rollback(&mut self) -> Result<(), StoreError> {
        self.written.truncate(self.part_written);
        while let Some(step) = self.undo.pop() {
            match step {
                Undo::Restore { table, key, old } => self.table(table, |t| {
                    match old {
                        Some(old) => drop(t.insert(key.as_slice(), old.as_slice())?),
                        None => drop(t.remove(key.as_slice())?),
                    }
                    Ok(())
                })?,
                Undo::IndexRemove { index, key, value } => {
                    self.multimap(index, |t| Ok(t.remove(key.as_slice(), value.as_slice()).map(drop)?))?
                }
                Undo::IndexAdd { index, key, value } => {
                    self.multimap(index, |t| Ok(t.insert(key.as_slice(), value.as_slice()).map(drop)?))?
                }
            }
        }
        Ok(())
    }
}

impl_reads!(WriteTx<'_>);
