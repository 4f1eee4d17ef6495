//! # crail-node-service
//!
//! The layer every per-node service (the shuffle service, the broadcast service) is built on,
//! written once: where services listen ([`Endpoint`], [`Listener`]) and how they are found
//! ([`advertise`], [`advertised`]); the store's frames and handshake (protocol version, the
//! cluster's shared secret) on every connection, TCP and Unix alike; a client
//! [`Connection`] whose requests are matched to replies by id, with [`Exchange`]s that stream
//! data both ways and carry file descriptors; the server loop [`run`] over a [`Service`];
//! [`Sessions`] (an application kept alive while its clients are connected, orphans expired);
//! and [`Failure`], which carries the store's typed error across the hop.
//!
//! The services above define only their messages and handlers.

mod advertise;
mod client;
mod endpoint;
mod error;
mod framed;
mod fuzz;
mod server;
mod session;

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/crail.node.v1.rs"));
}

pub use advertise::{advertise, advertised, advertised_hosts, host_of, keep_advertised, nonce};
pub use client::{Connection, Exchange, Options, Part};
pub use endpoint::{Endpoint, Listener};
pub use error::{Error, Failure, Result};
pub use framed::MAX_BODY;
#[doc(hidden)]
pub use fuzz::fuzz_frames;
pub use server::{Served, ServerConfig, Service, run};
pub use session::{Sessions, check_app};
