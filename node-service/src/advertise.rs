//! How a node's services are found: a small file per host in the store
//! (`<root>/.services/<host>`, one endpoint per line).

use crail_store::{CreateOptions, Error, Result, Store};

use crate::endpoint::Endpoint;

/// Records where the service of node `host` listens, in the store (`<root>/.services/<host>`),
/// for its clients to find it. Replaces what an earlier service of the host left.
pub async fn advertise(
    store: &Store,
    root: &str,
    host: &str,
    endpoints: &[Endpoint],
) -> Result<()> {
    let dir = format!("{root}/.services");
    for dir in [root, dir.as_str()] {
        match store.create_dir(dir, &CreateOptions::default()).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let text: String = endpoints.iter().map(|e| format!("{e}\n")).collect();
    let path = format!("{dir}/{host}");
    let pending = format!("{dir}/.{host}.{:x}", nonce());
    store
        .write_file(&pending, text.as_bytes(), &CreateOptions::default())
        .await?;
    match store.delete(&path, false).await {
        Ok(()) | Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    store.rename(&pending, &path).await?;
    Ok(())
}

/// Keeps the advertisement of [`advertise`] in place until `stop`: looks every `every` and
/// writes it again when it is gone (a namenode restarted without a journal, an operator
/// deleted it), so clients find the service again moments later.
pub async fn keep_advertised(
    store: Store,
    root: String,
    host: String,
    endpoints: Vec<Endpoint>,
    every: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = &mut stop => return,
        }
        match advertised(&store, &root, &host).await {
            Err(Error::NotFound { .. }) => {
                match advertise(&store, &root, &host, &endpoints).await {
                    Ok(()) => tracing::info!(%root, %host, "service advertised again"),
                    Err(e) => tracing::warn!(%root, %host, error = %e, "advertising again failed"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%root, %host, error = %e, "cannot check the advertisement"),
        }
    }
}

/// The endpoints the service under `root` of node `host` advertised (see [`advertise`]),
/// Unix socket first; [`Error::NotFound`] when it advertised none.
pub async fn advertised(store: &Store, root: &str, host: &str) -> Result<Vec<Endpoint>> {
    let path = format!("{root}/.services/{host}");
    let text = store
        .lookup(&path)
        .await?
        .into_file()?
        .read_to_end()
        .await?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|line| line.parse().ok())
        .collect())
}

/// The hosts whose service under `root` advertised itself (see [`advertise`]), in address
/// order. Empty when no node runs one.
pub async fn advertised_hosts(store: &Store, root: &str) -> Result<Vec<String>> {
    let entries = match store.list(&format!("{root}/.services")).await {
        Ok(entries) => entries,
        Err(Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut hosts: Vec<(std::net::IpAddr, String)> = entries
        .into_iter()
        .filter_map(|e| Some((e.name.parse().ok()?, e.name)))
        .collect();
    hosts.sort();
    Ok(hosts.into_iter().map(|(_, name)| name).collect())
}

/// The node a store client is on: its `local_host`, else 127.0.0.1.
pub fn host_of(store: &Store) -> String {
    store
        .config()
        .local_host
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
        .to_string()
}

/// A value unlikely to repeat, for hidden names of things being built.
pub fn nonce() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ u64::from(std::process::id()).rotate_left(32)
}
