//! The lean framed transport every crail connection speaks: a 16-byte header, a prost body,
//! several requests in flight per connection, and a handshake (protocol version and optional
//! shared-secret challenge) before anything else.

pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod io;
pub(crate) mod kind;

/// Version of the protocol spoken by this build. Peers with another version are refused at the
/// handshake with a clear error.
pub const PROTOCOL_VERSION: u32 = 2;
