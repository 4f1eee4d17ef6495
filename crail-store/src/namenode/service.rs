//! Request dispatch: decode a frame's body, run the operation on the namespace, encode the
//! reply or the typed error. Nothing here awaits, so the namespace lock is never held across a
//! suspension point, and nothing a client sends can stop other clients being served.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;

use crate::config::NamenodeConfig;
use crate::error::{ECHO_MAX, Error, Result, clipped};
use crate::grant::GrantKey;
use crate::namenode::journal::{self, Journal};
use crate::namenode::namespace::{CreateFlags, Ctx, Namespace, PathRef};
use crate::path::{self, PathLimits};
use crate::proto as pb;
use crate::types::{DatanodeSpec, NodeType, Placement};
use crate::wire::frame::{self, FLAG_RESPONSE, Frame};
use crate::wire::kind::{Kind, Rpc};

/// Who sent a request: the connection's host and whether it proved it may act as a datanode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub(crate) host: IpAddr,
    pub(crate) datanode: bool,
}

/// The namenode minus its sockets: state and request handling.
#[derive(Debug)]
pub(crate) struct Core {
    ns: Mutex<Namespace>,
    /// Where lasting changes go before they are acknowledged, if anywhere.
    journal: Option<Arc<Journal>>,
    limits: PathLimits,
    max_frame: usize,
    block_size: u64,
    max_blocks_per_request: u64,
    lease_timeout: Duration,
    heartbeat_interval: Duration,
    dead_after: Duration,
    /// Sent to registering datanodes: they derive the grant key from it.
    grant_salt: bytes::Bytes,
}

type Op<R> = fn(&Core, R, &Ctx) -> Result<<R as Rpc>::Reply>;

impl Core {
    pub(crate) fn new(config: &NamenodeConfig) -> Result<Self> {
        let salt = match &config.journal {
            Some(dir) => journal::kept_salt(dir, || Ok(GrantKey::salt()?.to_vec()))?,
            None => GrantKey::salt()?.to_vec(),
        };
        let datanodes = config.datanode_secret.as_ref().or(config.secret.as_ref());
        let grants = GrantKey::derive(datanodes, &salt);
        let mut ns = Namespace::new(config, grants)?;
        let journal = match &config.journal {
            Some(dir) => Some(open_journal(dir, config, &mut ns)?),
            None => None,
        };
        Ok(Self {
            ns: Mutex::new(ns),
            journal,
            grant_salt: bytes::Bytes::copy_from_slice(&salt),
            limits: config.path_limits(),
            max_frame: usize::try_from(config.max_frame.bytes()).unwrap_or(usize::MAX),
            block_size: config.block_size.bytes(),
            max_blocks_per_request: config.max_blocks_per_request,
            lease_timeout: config.lease_timeout,
            heartbeat_interval: config.heartbeat_interval,
            dead_after: config.dead_after(),
        })
    }

    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// How far the journal must be durable before replies to requests handled so far may go
    /// out (0 without a journal).
    pub(crate) fn journal_mark(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.appended())
    }

    /// Waits until the journal is durable up to `mark`.
    pub(crate) async fn durable(&self, mark: u64) -> Result<()> {
        match &self.journal {
            Some(journal) if mark > 0 => journal.durable(mark).await,
            _ => Ok(()),
        }
    }

    /// Answers one request frame of `caller` into `out` (a reply or an error frame, never
    /// nothing).
    pub(crate) fn handle(&self, frame: &Frame, caller: Caller, out: &mut BytesMut) {
        let result = match Kind::from_u16(frame.kind) {
            _ if let Some(journal) = self.journal.as_ref().filter(|j| j.failed()) => {
                Err(journal.failure())
            }
            _ if frame.flags & FLAG_RESPONSE != 0 => Err(Error::UnexpectedMessage {
                expected: "a request".into(),
                kind: u32::from(frame.kind),
            }),
            None => Err(Error::UnknownMessage {
                kind: u32::from(frame.kind),
            }),
            Some(kind) => match kind {
                Kind::Create => self.serve(frame, out, caller, Self::create),
                Kind::Lookup => self.serve(frame, out, caller, Self::lookup),
                Kind::Delete => self.serve(frame, out, caller, Self::delete),
                Kind::Rename => self.serve(frame, out, caller, Self::rename),
                Kind::List => self.serve(frame, out, caller, Self::list),
                Kind::OpenWrite => self.serve(frame, out, caller, Self::open_write),
                Kind::Allocate => self.serve(frame, out, caller, Self::allocate),
                Kind::Locate => self.serve(frame, out, caller, Self::locate),
                Kind::Close => self.serve(frame, out, caller, Self::close),
                Kind::Renew => self.serve(frame, out, caller, Self::renew),
                Kind::Release => self.serve(frame, out, caller, Self::release),
                Kind::ClusterInfo => self.serve(frame, out, caller, Self::cluster_info),
                Kind::RegisterDatanode => self.serve(frame, out, caller, Self::register_datanode),
                Kind::Heartbeat => self.serve(frame, out, caller, Self::heartbeat),
                Kind::DeregisterDatanode => {
                    self.serve(frame, out, caller, Self::deregister_datanode)
                }
                Kind::Error | Kind::Hello | Kind::Challenge | Kind::Auth | Kind::Welcome => {
                    Err(Error::UnexpectedMessage {
                        expected: "a request".into(),
                        kind: u32::from(frame.kind),
                    })
                }
                Kind::Write | Kind::Read | Kind::Attach => Err(Error::UnexpectedMessage {
                    expected: "a namenode request (data goes to datanodes)".into(),
                    kind: u32::from(frame.kind),
                }),
            },
        };
        if let Err(error) = result {
            frame::encode_error(out, frame.id, &error);
        }
    }

    fn serve<R: Rpc>(
        &self,
        frame: &Frame,
        out: &mut BytesMut,
        caller: Caller,
        op: Op<R>,
    ) -> Result<()> {
        let request: R = frame.decode_body(R::KIND.name())?;
        let reply = op(self, request, &Ctx::new(caller.host, caller.datanode))?;
        frame::encode(
            out,
            R::KIND,
            FLAG_RESPONSE,
            frame.id,
            &reply,
            self.max_frame,
        )
    }

    /// Expires leases and holds, declares silent datanodes dead. Called periodically.
    pub(crate) fn tick(&self) {
        let now = Instant::now();
        let mut ns = self.ns.lock();
        let expired = ns.expire(now);
        if expired > 0 {
            tracing::debug!(expired, "write leases and read holds expired");
        }
        ns.registry().reap(now, self.dead_after);
    }

    fn path<'a>(&self, raw: &'a [u8]) -> Result<RequestPath<'a>> {
        let components =
            path::parse(raw, &self.limits).map_err(|problem| Error::invalid_path(raw, problem))?;
        // parse() has checked UTF-8.
        let text = std::str::from_utf8(raw).unwrap_or_default();
        Ok(RequestPath { text, components })
    }

    fn create(&self, req: pb::CreateRequest, ctx: &Ctx) -> Result<pb::CreateReply> {
        let path = self.path(&req.path)?;
        let ty = NodeType::try_from(req.r#type)?;
        let placement = Placement::try_from(req.placement)?;
        let (node, lease) = self.ns.lock().create(
            path.as_ref(),
            ty,
            placement,
            CreateFlags {
                enumerable: req.enumerable,
                replace: req.replace,
            },
            ctx,
        )?;
        Ok(pb::CreateReply {
            node: Some(node),
            lease,
        })
    }

    fn lookup(&self, req: pb::LookupRequest, ctx: &Ctx) -> Result<pb::LookupReply> {
        let path = self.path(&req.path)?;
        let (node, hold) = self.ns.lock().lookup(path.as_ref(), req.hold, ctx)?;
        Ok(pb::LookupReply {
            node: Some(node),
            hold,
        })
    }

    fn delete(&self, req: pb::DeleteRequest, ctx: &Ctx) -> Result<pb::DeleteReply> {
        let path = self.path(&req.path)?;
        self.ns.lock().delete(path.as_ref(), req.recursive, ctx)?;
        Ok(pb::DeleteReply {})
    }

    fn rename(&self, req: pb::RenameRequest, ctx: &Ctx) -> Result<pb::RenameReply> {
        let from = self.path(&req.from)?;
        let to = self.path(&req.to)?;
        self.ns.lock().rename(from.as_ref(), to.as_ref(), ctx)?;
        Ok(pb::RenameReply {})
    }

    fn list(&self, req: pb::ListRequest, _ctx: &Ctx) -> Result<pb::ListReply> {
        let path = self.path(&req.path)?;
        let (entries, more) = self
            .ns
            .lock()
            .list(path.as_ref(), &req.start_after, req.limit)?;
        Ok(pb::ListReply { entries, more })
    }

    fn open_write(&self, req: pb::OpenWriteRequest, ctx: &Ctx) -> Result<pb::OpenWriteReply> {
        let path = self.path(&req.path)?;
        let (node, lease) = self.ns.lock().open_write(path.as_ref(), ctx)?;
        Ok(pb::OpenWriteReply {
            node: Some(node),
            lease,
        })
    }

    fn allocate(&self, req: pb::AllocateRequest, ctx: &Ctx) -> Result<pb::BlocksReply> {
        let blocks = self
            .ns
            .lock()
            .allocate(req.file_id, req.lease, req.first, req.count, ctx)?;
        Ok(pb::BlocksReply {
            blocks,
            block_size: self.block_size,
        })
    }

    fn locate(&self, req: pb::LocateRequest, _ctx: &Ctx) -> Result<pb::BlocksReply> {
        let blocks = self.ns.lock().locate(req.file_id, req.first, req.count)?;
        Ok(pb::BlocksReply {
            blocks,
            block_size: self.block_size,
        })
    }

    fn close(&self, req: pb::CloseRequest, ctx: &Ctx) -> Result<pb::CloseReply> {
        let node = self
            .ns
            .lock()
            .close(req.file_id, req.lease, req.size, req.keep, ctx)?;
        Ok(pb::CloseReply { node: Some(node) })
    }

    fn renew(&self, req: pb::RenewRequest, ctx: &Ctx) -> Result<pb::RenewReply> {
        self.ns.lock().renew(req.file_id, req.token, ctx)?;
        Ok(pb::RenewReply {})
    }

    fn release(&self, req: pb::ReleaseRequest, ctx: &Ctx) -> Result<pb::ReleaseReply> {
        self.ns.lock().release(req.file_id, req.token, ctx)?;
        Ok(pb::ReleaseReply {})
    }

    fn cluster_info(
        &self,
        _req: pb::ClusterInfoRequest,
        ctx: &Ctx,
    ) -> Result<pb::ClusterInfoReply> {
        let mut ns = self.ns.lock();
        let (nodes, files) = ns.counts();
        let datanodes = ns.registry().info(ctx.now);
        Ok(pb::ClusterInfoReply {
            block_size: self.block_size,
            datanodes,
            nodes,
            files,
            lease_timeout_ms: millis(self.lease_timeout),
            heartbeat_interval_ms: millis(self.heartbeat_interval),
            max_blocks_per_request: self.max_blocks_per_request,
        })
    }

    fn register_datanode(
        &self,
        req: pb::RegisterDatanodeRequest,
        ctx: &Ctx,
    ) -> Result<pb::RegisterDatanodeReply> {
        datanode_only("registering a datanode", ctx)?;
        let invalid = |what: &str, value: &str, expected: &str| Error::InvalidDatanode {
            reason: format!("{what} {:?} is not {expected}", clipped(value, ECHO_MAX)),
        };
        let host = req
            .host
            .parse()
            .map_err(|_| invalid("host", &req.host, "an IP address"))?;
        let address = req
            .address
            .parse()
            .map_err(|_| invalid("address", &req.address, "ip:port"))?;
        let spec = DatanodeSpec {
            host,
            address,
            tier: req.tier,
            storage_class: req.storage_class,
            capacity: req.capacity_bytes,
        };
        // A datanode registers from its own address: nobody can announce (and so take over)
        // another host's.
        if spec.host != ctx.peer || spec.address.ip() != spec.host {
            return Err(Error::NotPermitted {
                operation: "registering a datanode".into(),
                reason: format!(
                    "it connects from {} but announces host {} and address {}",
                    ctx.peer, spec.host, spec.address
                ),
            });
        }
        let report: Vec<(u64, u64)> = req
            .blocks
            .chunks_exact(16)
            .map(|c| {
                let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                (word(&c[..8]), word(&c[8..]))
            })
            .collect();
        let registered = self
            .ns
            .lock()
            .register_datanode(&spec, &req.uuid, &report, ctx.now)?;
        let (id, incarnation) = (registered.id, registered.incarnation);
        Ok(pb::RegisterDatanodeReply {
            id,
            block_size: self.block_size,
            heartbeat_interval_ms: millis(self.heartbeat_interval),
            grant_salt: self.grant_salt.clone(),
            incarnation,
            adopted_blocks: registered.adopted,
            lost_blocks: registered.lost,
        })
    }

    fn heartbeat(&self, req: pb::HeartbeatRequest, ctx: &Ctx) -> Result<pb::HeartbeatReply> {
        datanode_only("a datanode heartbeat", ctx)?;
        self.ns
            .lock()
            .registry()
            .heartbeat(req.id, req.incarnation, ctx.now)?;
        Ok(pb::HeartbeatReply {})
    }

    fn deregister_datanode(
        &self,
        req: pb::DeregisterDatanodeRequest,
        ctx: &Ctx,
    ) -> Result<pb::DeregisterDatanodeReply> {
        datanode_only("deregistering a datanode", ctx)?;
        self.ns
            .lock()
            .registry()
            .deregister(req.id, req.incarnation)?;
        Ok(pb::DeregisterDatanodeReply {})
    }
}

/// Opens the journal in `dir`, rebuilds `ns` from it and records into it from now on.
pub(crate) fn open_journal(
    dir: &Path,
    config: &NamenodeConfig,
    ns: &mut Namespace,
) -> Result<Arc<Journal>> {
    let started = Instant::now();
    let template = config.clone();
    let fresh: journal::Fresh = Arc::new(move || {
        // A compactor's namespace only replays and dumps records: it signs no grants.
        let grants = GrantKey::derive(None, &[0; 16]);
        Ok(Box::new(Namespace::new(&template, grants)?) as Box<dyn journal::Compact>)
    });
    let journal = Journal::open(
        journal::Options {
            dir: dir.to_owned(),
            block_size: config.block_size.bytes(),
            snapshot_every: config.journal_snapshot_every.bytes(),
            fresh,
        },
        &mut |record| ns.apply(record),
    )?;
    ns.finish_replay();
    // Its datanodes register again within moments; until they are declared dead, reads of
    // their blocks are asked to wait, not told the blocks are lost.
    ns.registry()
        .await_returns(Instant::now() + config.dead_after());
    let (nodes, files) = ns.counts();
    tracing::info!(
        journal = %dir.display(),
        nodes,
        files,
        ms = started.elapsed().as_millis() as u64,
        "namespace restored from the journal"
    );
    let journal = Arc::new(journal);
    ns.record_into(journal.clone());
    Ok(journal)
}

/// A checked request path: its text and components.
#[derive(Debug)]
struct RequestPath<'a> {
    text: &'a str,
    components: Vec<&'a str>,
}

impl RequestPath<'_> {
    fn as_ref(&self) -> PathRef<'_> {
        PathRef {
            text: self.text,
            components: &self.components,
        }
    }
}

/// Refuses `operation` to a client that did not prove the datanodes' secret.
fn datanode_only(operation: &str, ctx: &Ctx) -> Result<()> {
    if ctx.datanode {
        return Ok(());
    }
    Err(Error::NotPermitted {
        operation: operation.into(),
        reason: "only datanodes may, and this connection did not prove the datanode secret".into(),
    })
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}
