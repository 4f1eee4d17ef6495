//! The metadata server: namespace, datanode registry and placement, behind the framed RPC.

mod journal;
mod namespace;
mod registry;
mod server;
mod service;

pub use server::{Namenode, RunningNamenode, run};

/// A namenode core that several front ends can share: the framed server and, in the transport
/// benchmark, a tonic service calling the same dispatch code. Not a stable API.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct SharedCore {
    core: std::sync::Arc<service::Core>,
    config: crate::config::NamenodeConfig,
}

#[doc(hidden)]
impl SharedCore {
    /// A fresh namespace.
    pub fn new(config: crate::config::NamenodeConfig) -> crate::Result<Self> {
        config.validate()?;
        Ok(Self {
            core: std::sync::Arc::new(service::Core::new(&config)?),
            config,
        })
    }

    /// Answers one request the way the framed server does: (kind, flags, body) of the reply.
    pub fn dispatch(
        &self,
        kind: u16,
        body: bytes::Bytes,
        peer: std::net::IpAddr,
    ) -> (u16, u16, bytes::Bytes) {
        let frame = crate::wire::frame::Frame {
            kind,
            flags: 0,
            id: 1,
            body,
        };
        let mut out = bytes::BytesMut::new();
        // Behind its own front end (the transport benchmark): trusted as a datanode.
        let caller = service::Caller {
            host: peer,
            datanode: true,
        };
        self.core.handle(&frame, caller, &mut out);
        match crate::wire::frame::decode(&mut out, usize::MAX) {
            Ok(Some(reply)) => (reply.kind, reply.flags, reply.body),
            _ => (0, 0, bytes::Bytes::new()),
        }
    }

    /// Serves this core over the framed protocol until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> crate::Result<()> {
        server::serve_core(listener, self.core.clone(), &self.config, shutdown).await
    }
}

/// Feeds raw bytes, as a client would send them after the handshake, through the frame decoder
/// and the request handlers of a fresh namenode. Used by the fuzz target and tests; returns the
/// number of reply bytes produced.
#[doc(hidden)]
pub fn fuzz_requests(data: &[u8]) -> usize {
    use bytes::BytesMut;
    let config = crate::config::NamenodeConfig {
        max_frame: crate::units::ByteSize(64 << 10),
        ..Default::default()
    };
    let Ok(core) = service::Core::new(&config) else {
        return 0;
    };
    // A datanode's rights, so every operation is reachable.
    let peer = service::Caller {
        host: std::net::IpAddr::from([127, 0, 0, 1]),
        datanode: true,
    };
    let mut input = BytesMut::from(data);
    let mut out = BytesMut::new();
    while let Ok(Some(frame)) = crate::wire::frame::decode(&mut input, core.max_frame()) {
        core.handle(&frame, peer, &mut out);
        // Every request gets exactly one whole reply frame.
        let mut replies = out.clone();
        while let Ok(Some(_)) = crate::wire::frame::decode(&mut replies, usize::MAX) {}
        assert!(replies.is_empty(), "a reply frame was cut short");
    }
    core.tick();
    out.len()
}
