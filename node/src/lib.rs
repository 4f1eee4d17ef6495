//! A crail node assembled: its tiers and its services on one address ([`Node`]), a whole
//! cluster on this machine of child processes ([`Embedded`], what `crail cluster` and
//! `terasort run` start) and of in-process nodes ([`LocalCluster`], what tests start), on
//! plain configuration values ([`NodeConfig`], [`ClusterConfig`]).

/// `println!` that does not panic when stdout is gone (a parent that stopped reading it): the
/// servers print their announcements with it and keep serving.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that does not panic when stderr is gone.
#[macro_export]
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod config;
mod embedded;
mod error;
mod local;
mod memory;
mod node;
pub mod pki;

pub use config::{
    BROADCAST_PORT, BroadcastConfig, ClusterConfig, MAX_NODES, NodeConfig, ORPHAN_TTL,
    SHUFFLE_PORT, ShuffleConfig,
};
pub use embedded::{Embedded, PeakMemory, child_main};
pub use error::{Error, Result};
pub use local::LocalCluster;
pub use memory::{reset_peak_memory, resident_memory};
pub use node::{Node, datanode_line, start_datanode};

/// Logs to stderr, filtered by `RUST_LOG` or else `default` (e.g. "info").
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Raises this process's limit of open files to the most it may have: a server holds a
/// descriptor per connection (and many peers may connect), and the usual soft limit of 1024
/// would have it refuse its own host's clients long before its connection limits do.
pub fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        // Not allowed (a container's hard limit): the soft one stays.
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed here, before the
/// caller announces it is up, so an early signal is never met by the default action.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let handler = |kind, name: &str| {
        signal(kind).map_err(|e| Error::Config(format!("cannot handle {name}: {e}")))
    };
    let mut interrupt = handler(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = handler(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
