//! Objects Java holds by number: a stale, repeated or made-up number is an error, not a
//! dangling pointer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Failure, Result};

/// Numbers are never reused, across every table.
static NEXT: AtomicI64 = AtomicI64::new(1);

/// The live objects of one kind.
#[derive(Debug)]
pub(crate) struct Table<T> {
    what: &'static str,
    items: Mutex<Option<HashMap<i64, Arc<T>>>>,
}

impl<T> Table<T> {
    pub(crate) const fn new(what: &'static str) -> Self {
        Self {
            what,
            items: Mutex::new(None),
        }
    }

    /// Keeps `item`; returns its number.
    pub(crate) fn insert(&self, item: T) -> i64 {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        items
            .get_or_insert_with(HashMap::new)
            .insert(id, Arc::new(item));
        id
    }

    /// The item numbered `id`.
    pub(crate) fn get(&self, id: i64) -> Result<Arc<T>> {
        let items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        items
            .as_ref()
            .and_then(|m| m.get(&id).cloned())
            .ok_or_else(|| {
                Failure::new(
                    "Closed",
                    format!("no {} numbered {id} (closed?)", self.what),
                )
            })
    }

    /// Forgets the item numbered `id`, returning it if it was there.
    pub(crate) fn remove(&self, id: i64) -> Option<Arc<T>> {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        items.as_mut().and_then(|m| m.remove(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_name_live_items_only() {
        let table: Table<String> = Table::new("thing");
        let a = table.insert("a".into());
        let b = table.insert("b".into());
        assert_ne!(a, b);
        assert_eq!(*table.get(a).unwrap(), "a");
        assert!(table.remove(a).is_some());
        assert!(table.remove(a).is_none());
        let err = table.get(a).unwrap_err();
        assert_eq!(err.kind, "Closed");
        assert!(
            err.message.contains(&format!("no thing numbered {a}")),
            "{}",
            err.message
        );
        assert_eq!(table.get(0).unwrap_err().kind, "Closed");
        assert_eq!(*table.get(b).unwrap(), "b");
    }
}
