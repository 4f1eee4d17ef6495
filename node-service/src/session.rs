//! Sessions: which applications have clients connected to this node's service, their
//! liveness in the store, and the orphans (applications nobody has seen for a while).
//!
//! An application's liveness is the modification time of `<root>/.alive/<app>`: every node
//! whose service has a client of it touches that directory (creating and deleting a mark in
//! it), so the newest touch is the last sign of life any node saw.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crail_store::{CreateOptions, Error as StoreError, Store};

use crate::advertise::nonce;

/// The applications with clients connected to one node's service.
#[derive(Debug)]
pub struct Sessions {
    store: Store,
    root: &'static str,
    host: String,
    /// Applications with clients connected here, and how many connections.
    apps: parking_lot::Mutex<HashMap<String, usize>>,
}

/// Checks an application name: one path component a service can keep its data under.
pub fn check_app(app: &str) -> std::result::Result<(), String> {
    let ok = !app.is_empty()
        && app.len() <= 200
        && !app.starts_with('.')
        && app
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "app name {app:?}: an app name is 1 to 200 letters, digits, '.', '_' or '-', not starting with '.'"
        ))
    }
}

impl Sessions {
    /// The sessions of node `host`'s service keeping its data under `root` in `store`.
    pub fn new(store: Store, root: &'static str, host: impl Into<String>) -> Self {
        Self {
            store,
            root,
            host: host.into(),
            apps: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The node's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The store the service works on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A connection of `app` opened: the first one marks it alive.
    pub(crate) async fn opened(&self, app: &str) {
        let first = {
            let mut apps = self.apps.lock();
            let count = apps.entry(app.to_owned()).or_default();
            *count += 1;
            *count == 1
        };
        if first {
            self.touch(app).await;
        }
    }

    /// A connection of `app` closed.
    pub(crate) fn closed(&self, app: &str) {
        let mut apps = self.apps.lock();
        if let Some(count) = apps.get_mut(app) {
            *count -= 1;
            if *count == 0 {
                apps.remove(app);
            }
        }
    }

    /// The applications with clients connected here.
    pub fn live(&self) -> Vec<String> {
        self.apps.lock().keys().cloned().collect()
    }

    fn alive_dir(&self, app: &str) -> String {
        format!("{}/.alive/{app}", self.root)
    }

    /// Marks `app` as seen now.
    pub async fn touch(&self, app: &str) {
        let options = CreateOptions::default();
        let dir = self.alive_dir(app);
        for dir in [
            self.root.to_owned(),
            format!("{}/.alive", self.root),
            dir.clone(),
        ] {
            match self.store.create_dir(&dir, &options).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
                Err(e) => {
                    tracing::debug!("{}: cannot mark {app} alive: {e}", self.root);
                    return;
                }
            }
        }
        let mark = format!("{dir}/{}-{:x}", self.host, nonce());
        if self.store.create_dir(&mark, &options).await.is_ok() {
            let _ = self.store.delete(&mark, false).await;
        }
    }

    /// Forgets `app`'s liveness (its data is being removed).
    pub async fn forget(&self, app: &str) -> crail_store::Result<()> {
        match self.store.delete(&self.alive_dir(app), true).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Touches the applications with clients here, then names those under `root` that no
    /// node has seen for longer than `ttl`, with how long.
    pub async fn orphans(&self, ttl: Duration) -> Vec<(String, Duration)> {
        let live = self.live();
        for app in &live {
            self.touch(app).await;
        }
        let entries = match self.store.list(self.root).await {
            Ok(entries) => entries,
            Err(StoreError::NotFound { .. }) => return Vec::new(),
            Err(e) => {
                tracing::debug!("{}: cannot list: {e}", self.root);
                return Vec::new();
            }
        };
        let now = SystemTime::now();
        let mut orphans = Vec::new();
        for entry in entries {
            if entry.name.starts_with('.') || live.contains(&entry.name) {
                continue;
            }
            // An application nobody ever marked is as old as its directory.
            let seen = match self.store.stat(&self.alive_dir(&entry.name)).await {
                Ok(stat) => stat.modified,
                Err(_) => match self
                    .store
                    .stat(&format!("{}/{}", self.root, entry.name))
                    .await
                {
                    Ok(stat) => stat.modified,
                    Err(_) => continue,
                },
            };
            let idle = now.duration_since(seen).unwrap_or_default();
            if idle > ttl {
                orphans.push((entry.name, idle));
            }
        }
        orphans
    }
}
