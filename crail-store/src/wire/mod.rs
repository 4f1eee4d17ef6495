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

/// Turns on TCP keepalive for a connection (best effort): a peer whose host died or whose
/// network went away without a close is found within about two minutes (first probe after
/// 60 s idle, then every 10 s, six unanswered ones end it), whoever was waiting on it gets an
/// error, and its slot is freed.
pub fn keepalive(socket: &impl std::os::fd::AsFd) {
    use rustix::net::sockopt;
    let _ = sockopt::set_socket_keepalive(socket, true);
    let _ = sockopt::set_tcp_keepidle(socket, std::time::Duration::from_secs(60));
    let _ = sockopt::set_tcp_keepintvl(socket, std::time::Duration::from_secs(10));
    let _ = sockopt::set_tcp_keepcnt(socket, 6);
}

/// Version of the protocol spoken by this build. Peers with another version are refused at the
/// handshake with a clear error.
pub const PROTOCOL_VERSION: u32 = 2;
