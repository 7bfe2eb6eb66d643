//! Watches: the keys written to some tables, told to a watcher after each commit that wrote them, so that
//! a cache of those tables (the scheduler's view of the hosts) stays in step by re-reading only what
//! changed instead of whole tables.

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::{Mutex, mpsc};

use crate::codec::KeyCodec;

/// The keys written to the watched tables since the last [`Watch::written`], in any of them. A watch sees
/// every commit after the one that started it (see [`crate::Store::watch`]); it ends when dropped.
pub struct Watch<K> {
    keys: mpsc::Receiver<Vec<u8>>,
    key: PhantomData<fn() -> K>,
}

impl<K: KeyCodec> Watch<K> {
    /// Every key written since the last call, once each, without waiting. A key that does not decode as `K`
    /// (a table watched with keys of another type) is left out.
    pub fn written(&self) -> Vec<K> {
        let raw: BTreeSet<Vec<u8>> = self.keys.try_iter().collect();
        raw.iter().filter_map(|k| K::decode_key(k)).collect()
    }

    /// Whether any key was written since the last call, without waiting: for a watcher that re-reads
    /// everything it derives from the tables, whichever keys changed.
    pub fn changed(&self) -> bool {
        self.keys.try_iter().count() > 0
    }
}

/// One watch, as the writer keeps it.
pub(crate) struct Watcher {
    tables: Vec<&'static str>,
    keys: mpsc::Sender<Vec<u8>>,
}

impl Watcher {
    pub(crate) fn new<K>(tables: Vec<&'static str>) -> (Watcher, Watch<K>) {
        let (keys, received) = mpsc::channel();
        (Watcher { tables, keys }, Watch { keys: received, key: PhantomData })
    }

    pub(crate) fn tables(&self) -> &[&'static str] {
        &self.tables
    }
}

/// The watches of a store.
#[derive(Default)]
pub(crate) struct Watchers(Mutex<Vec<Watcher>>);

impl Watchers {
    /// The tables some watch watches, whose written keys a batch collects.
    pub(crate) fn tables(&self) -> Vec<&'static str> {
        let watchers = self.0.lock().expect("watchers lock");
        let mut tables: Vec<&'static str> = watchers.iter().flat_map(|w| w.tables.iter().copied()).collect();
        tables.sort_unstable();
        tables.dedup();
        tables
    }

    /// After a commit: adds the watches that started in it, then tells every watch the keys written to its
    /// tables. A watch whose [`Watch`] was dropped is forgotten.
    pub(crate) fn committed(&self, joined: Vec<Watcher>, written: &[(&'static str, Vec<u8>)]) {
        let mut watchers = self.0.lock().expect("watchers lock");
        watchers.extend(joined);
        if written.is_empty() {
            return;
        }
        watchers.retain(|w| {
            written
                .iter()
                .filter(|(table, _)| w.tables.contains(table))
                .all(|(_, key)| w.keys.send(key.clone()).is_ok())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_hears_its_tables_once_each_and_a_dropped_one_is_forgotten() {
        let watchers = Watchers::default();
        let (kept, kept_watch) = Watcher::new::<String>(vec!["a"]);
        let (dropped, dropped_watch) = Watcher::new::<String>(vec!["a", "b"]);
        watchers.committed(vec![kept, dropped], &[]);
        assert_eq!(watchers.tables(), ["a", "b"]);
        drop(dropped_watch);
        let written = [("a", b"x".to_vec()), ("b", b"y".to_vec()), ("a", b"x".to_vec())];
        watchers.committed(Vec::new(), &written);
        assert_eq!(kept_watch.written(), ["x".to_string()], "its own table's key, once");
        assert!(!kept_watch.changed(), "nothing was written since");
        watchers.committed(Vec::new(), &[("a", b"z".to_vec())]);
        assert!(kept_watch.changed());
        assert_eq!(watchers.tables(), ["a"], "the dropped watch is gone, and with it table b");
    }
}
