//! # crail-store
//!
//! A tiered store for ephemeral data, after Apache Crail: a namenode holds the namespace and
//! places blocks on datanodes (DRAM first, then flash); clients talk to both over a lean framed
//! protocol. This crate knows nothing about shuffles; the layers above build on [`Store`].
//!
//! - [`Store`]: the async client, with typed handles for the five node types ([`File`],
//!   [`Directory`], [`MultiFile`], [`Table`], [`KeyValue`]) and the [`WriteLease`] that
//!   writes a file's blocks.
//! - `namenode::run` and `datanode::Datanode`: the servers (`crail namenode`, `crail node`),
//!   behind the default `server` feature; engines' clients turn it off and link neither (nor
//!   io_uring).
//! - [`Config`]: typed configuration with defaults in code, loadable from one TOML file.
//! - [`Error`]: every failure, typed, with the same variant on the client as on the server.

mod buffer;
mod client;
mod config;
pub mod crc;
mod error;
#[cfg(feature = "server")]
mod grant;
mod local;
mod path;
mod proto;
mod types;
mod units;
pub mod wire;

#[cfg(feature = "server")]
pub mod datanode;
#[cfg(feature = "server")]
pub mod namenode;
pub mod rdma;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use buffer::{ALIGN, Buffer, BufferPool};
pub use client::{
    AsyncBufferReader, AsyncFileWriter, Directory, File, FileReader, FileWriter, KeyValue,
    LeaseTicket, MultiFile, MultiReader, Node, Store, Table, WriteLease,
};
pub use config::{
    ClientConfig, Config, DEFAULT_NAMENODE_PORT, DatanodeConfig, IoEngine, KeyInfo, KeyKind,
    NamenodeConfig, SecurityConfig, TierKind, Transport, check_secrets, keys as config_keys,
    reference_markdown as config_reference_markdown,
};
pub use error::{Error, Result};
pub use path::{PathLimits, PathProblem};
pub use types::{
    BlockLocation, ClusterInfo, CreateOptions, DatanodeId, DatanodeSpec, DatanodeStatus, DirEntry,
    Grant, NodeType, Placement, Registration, Stat, Tiering,
};
pub use units::{ByteSize, UnitError, format_duration, parse_duration};
pub use wire::PROTOCOL_VERSION;
pub use wire::handshake::Secret;

/// Raw-protocol entry points for the fuzz targets and protocol tests. Not a stable API.
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod testing {
    pub use crate::datanode::fuzz_requests as fuzz_data_requests;
    pub use crate::namenode::fuzz_requests;

    /// Decodes arbitrary bytes as a client decodes replies: frames, then error bodies turned
    /// into typed errors. Used by the fuzz target for the client side of the frame decoder.
    pub fn fuzz_replies(data: &[u8]) {
        let mut input = bytes::BytesMut::from(data);
        while let Ok(Some(frame)) = crate::wire::frame::decode(&mut input, 1 << 16) {
            let _ = frame.decode_body::<crate::proto::BlocksReply>("blocks reply");
            let _ = frame.decode_body::<crate::proto::ListReply>("list reply");
            let _ = frame.decode_body::<crate::proto::ReadReply>("read reply");
            let _ = frame.decode_body::<crate::proto::AttachReply>("attach reply");
            let _ = frame.into_error().to_string();
        }
    }

    /// Runs the server side of the handshake (clients' and datanodes' secrets set) against
    /// `data` as the client's bytes, and the client side against `data` as the server's.
    /// Used by the `handshake` fuzz target: must never panic or hang.
    pub fn fuzz_handshake(data: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            return;
        };
        let clients = crate::Secret::new("fuzz-clients-secret");
        let datanodes = crate::Secret::new("fuzz-datanodes-secret");
        let timeout = std::time::Duration::from_millis(200);
        runtime.block_on(async {
            for server_side in [true, false] {
                let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
                let _ = theirs.write_all(data).await;
                let _ = theirs.shutdown().await;
                let mut buf = bytes::BytesMut::new();
                if server_side {
                    let secrets = crate::wire::handshake::Secrets {
                        clients: clients.as_ref(),
                        datanodes: datanodes.as_ref(),
                    };
                    let service = crate::wire::handshake::Service {
                        name: "fuzz",
                        write_piece: 0,
                        idle_timeout: std::time::Duration::ZERO,
                    };
                    let _ = crate::wire::handshake::server(
                        &mut ours, &mut buf, secrets, service, timeout,
                    )
                    .await;
                } else {
                    let _ = crate::wire::handshake::client(
                        &mut ours,
                        &mut buf,
                        clients.as_ref(),
                        "fuzz",
                        timeout,
                    )
                    .await;
                }
            }
        });
    }

    /// Encodes one request frame as a client would send it: `kind`, `id` and a raw body.
    pub fn raw_frame(kind: u16, flags: u16, id: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + body.len());
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Message kind numbers, for hand-made frames.
    pub const KIND_HELLO: u16 = crate::wire::kind::Kind::Hello as u16;
    /// See [`KIND_HELLO`].
    pub const KIND_LOOKUP: u16 = crate::wire::kind::Kind::Lookup as u16;
    /// See [`KIND_HELLO`].
    pub const KIND_LIST: u16 = crate::wire::kind::Kind::List as u16;

    /// Encodes a list request body for `path` (first page).
    pub fn list_body(path: &[u8]) -> Vec<u8> {
        use prost::Message;
        crate::proto::ListRequest {
            path: bytes::Bytes::copy_from_slice(path),
            start_after: String::new(),
            limit: 0,
        }
        .encode_to_vec()
    }

    /// A Hello body claiming protocol `version`.
    pub fn hello_body(version: u32) -> Vec<u8> {
        use prost::Message;
        crate::proto::Hello {
            protocol_version: version,
            client_nonce: bytes::Bytes::from_static(&[7; 32]),
            client_name: "raw test client".into(),
        }
        .encode_to_vec()
    }

    /// Runs a client handshake without a secret on a raw socket, so the test can send
    /// hand-made frames afterwards.
    pub async fn handshake(stream: &mut tokio::net::TcpStream) -> crate::Result<()> {
        let mut buf = bytes::BytesMut::new();
        crate::wire::handshake::client(
            stream,
            &mut buf,
            None,
            "raw test client",
            std::time::Duration::from_secs(5),
        )
        .await
        .map(|_| ())
    }

    /// Message kind of a data-plane write (a payload follows the frame).
    pub const KIND_WRITE: u16 = crate::wire::kind::Kind::Write as u16;
    /// Message kind of a data-plane read.
    pub const KIND_READ: u16 = crate::wire::kind::Kind::Read as u16;

    /// Encodes a data-plane write request body for datanode id `datanode`, with the grant of
    /// `block` (a location the namenode gave) if any.
    pub fn write_body(
        datanode: u64,
        offset: u64,
        length: u32,
        crc32c: u32,
        block: Option<&crate::BlockLocation>,
    ) -> Vec<u8> {
        use prost::Message;
        crate::proto::WriteRequest {
            offset,
            length,
            crc32c,
            datanode,
            slot: 0,
            pieces: Vec::new(),
            grants: block
                .map(|b| b.grant.to_wire(b.offset))
                .into_iter()
                .collect(),
        }
        .encode_to_vec()
    }

    /// Encodes a data-plane read request body for datanode id `datanode`, with the grant of
    /// `block` if any.
    pub fn read_body(
        datanode: u64,
        offset: u64,
        length: u32,
        block: Option<&crate::BlockLocation>,
    ) -> Vec<u8> {
        use prost::Message;
        crate::proto::ReadRequest {
            offset,
            length,
            datanode,
            slot: 0,
            grant: block.map(|b| b.grant.to_wire(b.offset)),
        }
        .encode_to_vec()
    }

    /// A decoded data-plane reply: kind, request id, read header, error.
    pub type DataReply = (u16, u64, Option<(u32, u32)>, Option<crate::Error>);

    /// Decodes a data-plane reply frame from `buf`: `(kind, id, read reply (length, crc32c)
    /// if it is one, typed error if it is one)`. A read reply's payload stays in `buf`.
    pub fn decode_data_reply(buf: &mut bytes::BytesMut) -> crate::Result<Option<DataReply>> {
        use prost::Message;
        Ok(crate::wire::frame::decode(buf, 1 << 24)?.map(|f| {
            let (kind, id) = (f.kind, f.id);
            let read = (kind == KIND_READ && !f.is_error())
                .then(|| crate::proto::ReadReply::decode(f.body.clone()).ok())
                .flatten()
                .map(|r| (r.length, r.crc32c));
            let error = f.is_error().then(|| f.into_error());
            (kind, id, read, error)
        }))
    }

    /// Encodes a lookup request body for `path` (raw bytes, not checked).
    pub fn lookup_body(path: &[u8]) -> Vec<u8> {
        use prost::Message;
        crate::proto::LookupRequest {
            path: bytes::Bytes::copy_from_slice(path),
            hold: false,
        }
        .encode_to_vec()
    }

    /// Decodes a reply frame from `buf`: `Ok(Some((kind, id, error)))` with the typed error of
    /// an error frame.
    pub fn decode_reply(
        buf: &mut bytes::BytesMut,
    ) -> crate::Result<Option<(u16, u64, Option<crate::Error>)>> {
        Ok(crate::wire::frame::decode(buf, 1 << 24)?.map(|f| {
            let (kind, id) = (f.kind, f.id);
            let error = f.is_error().then(|| f.into_error());
            (kind, id, error)
        }))
    }
}
