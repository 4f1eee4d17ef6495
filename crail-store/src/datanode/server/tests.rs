//! The data plane's refusals, on raw connections to an in-process datanode.

use std::net::SocketAddr;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::datanode::fuzz_requests;
use crate::local;
use tokio::net::TcpStream;

use super::*;
use crate::config::{ClientConfig, DatanodeConfig, NamenodeConfig};
use crate::datanode::Datanode;
use crate::namenode::RunningNamenode;
use crate::units::ByteSize;

struct Running {
    _nn: Option<RunningNamenode>,
    addr: SocketAddr,
    id: u64,
    grants: crate::grant::GrantKey,
}

impl Running {
    /// A grant of generation 1 for the block holding `offset` (blocks of 1 MiB).
    fn grant(&self, offset: u64, write: bool) -> pb::Grant {
        self.grant_of(offset, 1, write)
    }

    fn grant_of(&self, offset: u64, generation: u64, write: bool) -> pb::Grant {
        self.grants
            .sign(self.id, offset - offset % (1 << 20), generation, write)
    }
}

async fn datanode(host: [u8; 4]) -> Running {
    datanode_with(host, Duration::ZERO).await
}

/// A datanode that closes connections idle for `idle`.
async fn datanode_with(host: [u8; 4], idle: Duration) -> Running {
    let nn = RunningNamenode::start(NamenodeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..NamenodeConfig::default()
    })
    .await
    .unwrap();
    let listener = TcpListener::bind(SocketAddr::from((host, 0)))
        .await
        .unwrap();
    let config = DatanodeConfig {
        capacity: ByteSize(4 << 20),
        idle_timeout: idle,
        ..DatanodeConfig::default()
    };
    let dn = Datanode::start(listener, config, ClientConfig::for_namenode(nn.addr()))
        .await
        .unwrap();
    assert!(dn.info().fast_path);
    let (addr, id) = (dn.info().address, dn.info().id.0);
    let grants = dn.identity.grants.clone();
    tokio::spawn(dn.serve(std::future::pending()));
    Running {
        _nn: Some(nn),
        addr,
        id,
        grants,
    }
}

async fn greet<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> BytesMut {
    let mut rbuf = BytesMut::new();
    handshake::client(stream, &mut rbuf, None, "test", Duration::from_secs(5))
        .await
        .unwrap();
    rbuf
}

fn request<M: prost::Message>(kind: Kind, id: u64, msg: &M) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode(&mut out, kind, 0, id, msg, MAX_REQUEST_BODY).unwrap();
    out
}

/// The next frame, or `None` once the datanode closed the connection.
async fn reply(sock: &impl io::Socket, rbuf: &mut BytesMut) -> Option<Frame> {
    loop {
        if let Some(frame) = frame::decode(rbuf, 1 << 20).unwrap() {
            return Some(frame);
        }
        let read = tokio::time::timeout(Duration::from_secs(5), io::read_some(sock, rbuf));
        if read.await.unwrap().unwrap_or(0) == 0 {
            return None;
        }
    }
}

async fn error(sock: &impl io::Socket, rbuf: &mut BytesMut) -> Error {
    let frame = reply(sock, rbuf).await.unwrap();
    assert!(
        frame.is_error(),
        "expected an error, got kind {}",
        frame.kind
    );
    frame.into_error()
}

fn read(dn: &Running, offset: u64, length: u32, slot: u32) -> pb::ReadRequest {
    pb::ReadRequest {
        offset,
        length,
        datanode: dn.id,
        slot,
        grant: Some(dn.grant(offset, false)),
    }
}

#[tokio::test]
async fn a_local_connection_must_attach_sealed_memory_first() {
    let dn = datanode([127, 0, 0, 21]).await;

    // Anything but an attach first: refused, connection closed.
    let mut s = local::connect(dn.addr).await.unwrap();
    let mut rbuf = greet(&mut s).await;
    s.write_all(&request(Kind::Read, 1, &read(&dn, 0, 4096, 0)))
        .await
        .unwrap();
    assert!(matches!(
        error(&s, &mut rbuf).await,
        Error::UnexpectedMessage { .. }
    ));
    assert!(reply(&s, &mut rbuf).await.is_none());

    // An attach without its memory file.
    let attach = pb::AttachRequest {
        slot_size: 4096,
        slots: 2,
    };
    let mut s = local::connect(dn.addr).await.unwrap();
    let mut rbuf = greet(&mut s).await;
    s.write_all(&request(Kind::Attach, 1, &attach))
        .await
        .unwrap();
    let e = error(&s, &mut rbuf).await;
    assert!(e.to_string().contains("no memory file"), "{e}");

    // A file that could shrink under the datanode.
    let file = tempfile::tempfile().unwrap();
    file.set_len(8192).unwrap();
    let mut s = local::connect(dn.addr).await.unwrap();
    let mut rbuf = greet(&mut s).await;
    let frame = request(Kind::Attach, 1, &attach);
    local::send_with_fd(&s, &frame, std::os::fd::AsFd::as_fd(&file))
        .await
        .unwrap();
    let e = error(&s, &mut rbuf).await;
    assert!(e.to_string().contains("sealable"), "{e}");

    // Sizes that do not match the memory.
    let staging = Staging::create(4096, 2).unwrap();
    let mut s = local::connect(dn.addr).await.unwrap();
    let mut rbuf = greet(&mut s).await;
    let wrong = pb::AttachRequest {
        slot_size: 8192,
        slots: 2,
    };
    local::send_with_fd(&s, &request(Kind::Attach, 1, &wrong), staging.fd())
        .await
        .unwrap();
    let e = error(&s, &mut rbuf).await;
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
}

#[tokio::test]
async fn slots_carry_payloads_and_bad_slots_fail_alone() {
    let dn = datanode([127, 0, 0, 22]).await;
    let staging = Staging::create(8192, 2).unwrap();
    let mut s = local::connect(dn.addr).await.unwrap();
    let mut rbuf = greet(&mut s).await;
    let attach = pb::AttachRequest {
        slot_size: 8192,
        slots: 2,
    };
    local::send_with_fd(&s, &request(Kind::Attach, 1, &attach), staging.fd())
        .await
        .unwrap();
    let attached = reply(&s, &mut rbuf).await.unwrap();
    assert_eq!(attached.kind, Kind::Attach as u16);
    assert!(!attached.is_error());

    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    staging.copy_in(0, &data).unwrap();
    let write = |crc32c, slot| pb::WriteRequest {
        offset: 8192,
        length: 8192,
        crc32c,
        datanode: dn.id,
        slot,
        pieces: Vec::new(),
        grants: vec![dn.grant(8192, true)],
    };
    let mut out = BytesMut::new();
    // A wrong checksum, a slot past the end, then the good write and a read into slot 2.
    out.put(request(Kind::Write, 2, &write(1, 1)));
    out.put(request(
        Kind::Write,
        3,
        &write(crate::crc::crc32c(&data), 3),
    ));
    out.put(request(Kind::Read, 4, &read(&dn, 8192, 8192, 9)));
    out.put(request(
        Kind::Write,
        5,
        &write(crate::crc::crc32c(&data), 1),
    ));
    out.put(request(Kind::Read, 6, &read(&dn, 8192, 8192, 2)));
    s.write_all(&out).await.unwrap();
    let mut replies = std::collections::HashMap::new();
    for _ in 0..5 {
        let frame = reply(&s, &mut rbuf).await.unwrap();
        replies.insert(frame.id, frame);
    }
    let mut take = |id| replies.remove(&id).unwrap();
    assert!(matches!(
        take(2).into_error(),
        Error::ChecksumMismatch { .. }
    ));
    assert!(matches!(take(3).into_error(), Error::BadRange { .. }));
    assert!(matches!(take(4).into_error(), Error::BadRange { .. }));
    let written = take(5);
    assert!(!written.is_error());
    let read_reply: pb::ReadReply = take(6).decode_body("read reply").unwrap();
    assert_eq!(read_reply.crc32c, crate::crc::crc32c(&data));
    assert_eq!(
        read_reply.slot, 2,
        "the reply names the slot its payload is in"
    );
    let mut back = vec![0u8; 8192];
    staging.copy_out(1, &mut back).unwrap();
    assert_eq!(back, data);
    // Nothing followed the replies on the stream: payloads went through the slots.
    assert!(rbuf.is_empty());
}

#[test]
fn fuzzed_requests_get_whole_replies() {
    let dn = Running {
        _nn: None,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        id: 1,
        grants: crate::grant::GrantKey::derive(None, &[0; 32]),
    };
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 256) as u8).collect();
    let mut input = BytesMut::new();
    input.put(request(
        Kind::Write,
        3,
        &pb::WriteRequest {
            offset: 4096,
            length: 4096,
            crc32c: crate::crc::crc32c(&data),
            datanode: 1,
            slot: 0,
            pieces: Vec::new(),
            grants: vec![dn.grant(4096, true)],
        },
    ));
    input.put(&data[..]);
    input.put(request(Kind::Read, 1, &read(&dn, 4096, 4096, 0)));
    input.put(request(Kind::Read, 2, &read(&dn, 4096, 4096, 2)));
    // Cut short mid-frame: the datanode just stops.
    input.put(&request(Kind::Read, 4, &read(&dn, 0, 1, 0))[..7]);
    assert!(fuzz_requests(&input) > 4096);
    // A fuzzer's find: a short read through a slot, then a long error reply (the check
    // took the slot read's length from the stream, cutting the next frame).
    let found = [
        9, 0, 0, 0, 65, 0, 0, 0, 0, 253, 195, 43, 8, 0, 0, 8, 32, 1, 152, 26, 8, 16, 65, 24, 1,
        245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245,
        245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 245, 7,
    ];
    assert!(fuzz_requests(&found) > 0);
    assert!(fuzz_requests(b"garbage that is no frame at all") > 0);
    fuzz_requests(&[]);
}

#[tokio::test]
async fn scattered_writes_land_piece_by_piece_and_bad_ones_fail_alone() {
    let dn = datanode([127, 0, 0, 24]).await;
    let mut s = TcpStream::connect(dn.addr).await.unwrap();
    let mut rbuf = greet(&mut s).await;
    let mut data: Vec<u8> = (0..8192u32).map(|i| (i * 13 % 253) as u8).collect();
    let scatter = |length: u32, pieces: Vec<u32>| pb::WriteRequest {
        offset: 8192,
        length,
        crc32c: 0,
        datanode: dn.id,
        slot: 0,
        pieces,
        grants: vec![dn.grant(0, true), dn.grant(1 << 20, true)],
    };
    let mut out = BytesMut::new();
    // The block's bytes, whole.
    out.put(request(
        Kind::Write,
        1,
        &pb::WriteRequest {
            offset: 8192,
            length: 8192,
            crc32c: crate::crc::crc32c(&data),
            datanode: dn.id,
            slot: 0,
            pieces: Vec::new(),
            grants: vec![dn.grant(0, true)],
        },
    ));
    out.put(&data[..]);
    // Three pieces, 100 bytes at 10 and 200 at 2000, and 100 in the next block, in one
    // request.
    let (a, b) = (vec![0xaa; 100], vec![0xbb; 200]);
    let (ca, cb) = (crate::crc::crc32c(&a), crate::crc::crc32c(&b));
    out.put(request(
        Kind::Write,
        2,
        &scatter(400, vec![10, 100, ca, 2000, 200, cb, 1 << 20, 100, ca]),
    ));
    out.put(&a[..]);
    out.put(&b[..]);
    out.put(&a[..]);
    // Triples that do not add up, a piece across the block, a wrong checksum: each
    // refused, its payload skipped.
    out.put(request(Kind::Write, 3, &scatter(300, vec![10, 100, ca])));
    out.put(&[0u8; 300][..]);
    let edge = (1 << 20) - 8192 - 50;
    out.put(request(Kind::Write, 4, &scatter(100, vec![edge, 100, ca])));
    out.put(&a[..]);
    out.put(request(
        Kind::Write,
        5,
        &scatter(300, vec![7000, 100, cb, 7500, 200, cb]),
    ));
    out.put(&a[..]);
    out.put(&b[..]);
    out.put(request(Kind::Read, 6, &read(&dn, (1 << 20) + 8192, 100, 0)));
    out.put(request(Kind::Read, 7, &read(&dn, 8192, 4096, 0)));
    s.write_all(&out).await.unwrap();
    assert!(!reply(&s, &mut rbuf).await.unwrap().is_error());
    assert!(!reply(&s, &mut rbuf).await.unwrap().is_error());
    let e = reply(&s, &mut rbuf).await.unwrap().into_error();
    assert!(e.to_string().contains("do not add up"), "{e}");
    let e = reply(&s, &mut rbuf).await.unwrap().into_error();
    assert!(matches!(e, Error::BadRange { .. }), "{e}");
    let e = reply(&s, &mut rbuf).await.unwrap().into_error();
    assert!(matches!(e, Error::ChecksumMismatch { .. }), "{e}");
    let next_block: pb::ReadReply = reply(&s, &mut rbuf)
        .await
        .unwrap()
        .decode_body("read reply")
        .unwrap();
    assert_eq!(next_block.crc32c, ca);
    // Its payload, then the last reply.
    while rbuf.len() < 100 {
        let mut more = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut s, &mut more)
            .await
            .unwrap();
        assert!(n > 0);
        rbuf.extend_from_slice(&more[..n]);
    }
    assert_eq!(&rbuf[..100], &a[..]);
    let _ = rbuf.split_to(100);
    let read_reply: pb::ReadReply = reply(&s, &mut rbuf)
        .await
        .unwrap()
        .decode_body("read reply")
        .unwrap();
    data[10..110].copy_from_slice(&a);
    data[2000..2200].copy_from_slice(&b);
    assert_eq!(read_reply.crc32c, crate::crc::crc32c(&data[..4096]));
}

#[tokio::test]
async fn a_tcp_connection_has_no_slots() {
    let dn = datanode([127, 0, 0, 23]).await;
    let mut s = TcpStream::connect(dn.addr).await.unwrap();
    let mut rbuf = greet(&mut s).await;
    s.write_all(&request(Kind::Read, 1, &read(&dn, 0, 4096, 1)))
        .await
        .unwrap();
    let e = error(&s, &mut rbuf).await;
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    // The connection goes on (a read of bytes never written: refused, not garbage).
    s.write_all(&request(Kind::Read, 2, &read(&dn, 0, 4096, 0)))
        .await
        .unwrap();
    let frame = reply(&s, &mut rbuf).await.unwrap();
    assert_eq!(frame.id, 2);
    let e = frame.into_error();
    assert!(matches!(e, Error::Unwritten { .. }), "{e}");
}

#[tokio::test]
async fn requests_need_a_grant_and_an_older_generation_is_fenced() {
    let dn = datanode([127, 0, 0, 25]).await;
    let mut s = TcpStream::connect(dn.addr).await.unwrap();
    let mut rbuf = greet(&mut s).await;
    let data = vec![0x5a_u8; 4096];
    let crc = crate::crc::crc32c(&data);
    let write = |grants: Vec<pb::Grant>| pb::WriteRequest {
        offset: 4096,
        length: 4096,
        crc32c: crc,
        datanode: dn.id,
        slot: 0,
        pieces: Vec::new(),
        grants,
    };
    let read = |grant: Option<pb::Grant>| pb::ReadRequest {
        offset: 4096,
        length: 4096,
        datanode: dn.id,
        slot: 0,
        grant,
    };
    let mut forged = dn.grant_of(0, 5, true);
    forged.mac = bytes::Bytes::from_static(&[7; 16]);
    let other_block = dn.grant_of(1 << 20, 5, true);
    let refused: Vec<(&str, pb::WriteRequest)> = vec![
        ("none", write(Vec::new())),
        ("read-only", write(vec![dn.grant_of(0, 5, false)])),
        ("forged", write(vec![forged])),
        ("another block's", write(vec![other_block])),
    ];
    for (i, (what, req)) in refused.iter().enumerate() {
        s.write_all(&request(Kind::Write, i as u64, req))
            .await
            .unwrap();
        s.write_all(&data).await.unwrap();
        let e = error(&s, &mut rbuf).await;
        assert!(matches!(e, Error::GrantRefused { .. }), "{what}: {e}");
    }
    // Generation 5 writes; 4 (the block's previous owner) is fenced, for writes and reads.
    let ok = |frame: Frame| assert!(!frame.is_error(), "{}", frame.into_error());
    s.write_all(&request(
        Kind::Write,
        10,
        &write(vec![dn.grant_of(0, 5, true)]),
    ))
    .await
    .unwrap();
    s.write_all(&data).await.unwrap();
    ok(reply(&s, &mut rbuf).await.unwrap());
    s.write_all(&request(
        Kind::Write,
        11,
        &write(vec![dn.grant_of(0, 4, true)]),
    ))
    .await
    .unwrap();
    s.write_all(&[0xee; 4096]).await.unwrap();
    let e = error(&s, &mut rbuf).await;
    assert!(
        matches!(
            e,
            Error::Fenced {
                offset: 0,
                generation: 4,
                current: 5
            }
        ),
        "{e}"
    );
    s.write_all(&request(
        Kind::Read,
        12,
        &read(Some(dn.grant_of(0, 4, false))),
    ))
    .await
    .unwrap();
    assert!(matches!(error(&s, &mut rbuf).await, Error::Fenced { .. }));
    // The block kept generation 5's bytes.
    s.write_all(&request(
        Kind::Read,
        13,
        &read(Some(dn.grant_of(0, 5, false))),
    ))
    .await
    .unwrap();
    let back: pb::ReadReply = reply(&s, &mut rbuf)
        .await
        .unwrap()
        .decode_body("read reply")
        .unwrap();
    assert_eq!(back.crc32c, crc);
}

#[tokio::test]
async fn idle_connections_are_closed_and_clients_replace_theirs_first() {
    let dn = datanode_with([127, 0, 0, 1], Duration::from_millis(400)).await;
    let mut sock = TcpStream::connect(dn.addr).await.unwrap();
    let mut rbuf = BytesMut::new();
    let welcome = handshake::client(&mut sock, &mut rbuf, None, "test", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(welcome.idle_timeout_ms, 400);
    let err = error(&sock, &mut rbuf).await;
    assert!(err.is_idle_close(), "{err}");
    assert!(reply(&sock, &mut rbuf).await.is_none());

    // A client that idles past the limit between its reads and writes never notices: it
    // replaces a connection idle for half the limit before using it again.
    let nn = dn._nn.as_ref().unwrap();
    let store = crate::Store::connect(&ClientConfig::for_namenode(nn.addr()))
        .await
        .unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    store
        .write_file("/f", &data, &Default::default())
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let file = store.lookup("/f").await.unwrap().into_file().unwrap();
        assert!(file.read_to_end().await.unwrap() == data);
    }
}
