//! The lean framed transport every crail connection speaks: a 16-byte header, a prost body,
//! several requests in flight per connection, and a handshake (protocol version and optional
//! shared-secret challenge) before anything else.
//!
//! Public for the node-service layer (`crail-node-service`), which speaks the same frames and
//! handshake on every service connection; the store's own message kinds stay private.

pub mod frame;
pub mod gate;
pub mod handshake;
pub(crate) mod io;
pub mod tls;

pub use crate::local::{recv_into_with_fd, send_with_fd};
pub(crate) mod kind;

/// Version of the protocol spoken by this build. Peers with another version are refused at the
/// handshake with a clear error.
pub const PROTOCOL_VERSION: u32 = 2;
