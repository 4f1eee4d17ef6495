//! Message kinds (the `kind` field of a frame header) and the request/reply pairing.

use crate::proto as pb;

/// Every message kind this build knows. Numbers are part of the protocol: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Kind {
    Error = 1,
    Hello = 2,
    Challenge = 3,
    Auth = 4,
    Welcome = 5,
    Create = 16,
    Lookup = 17,
    Delete = 18,
    Rename = 19,
    List = 20,
    OpenWrite = 21,
    Allocate = 22,
    Locate = 23,
    Close = 24,
    Renew = 25,
    Release = 26,
    ClusterInfo = 27,
    RegisterDatanode = 48,
    Heartbeat = 49,
    DeregisterDatanode = 50,
    Write = 64,
    Read = 65,
    Attach = 66,
}

impl Kind {
    const ALL: [Kind; 23] = [
        Kind::Error,
        Kind::Hello,
        Kind::Challenge,
        Kind::Auth,
        Kind::Welcome,
        Kind::Create,
        Kind::Lookup,
        Kind::Delete,
        Kind::Rename,
        Kind::List,
        Kind::OpenWrite,
        Kind::Allocate,
        Kind::Locate,
        Kind::Close,
        Kind::Renew,
        Kind::Release,
        Kind::ClusterInfo,
        Kind::RegisterDatanode,
        Kind::Heartbeat,
        Kind::DeregisterDatanode,
        Kind::Write,
        Kind::Read,
        Kind::Attach,
    ];

    pub(crate) fn from_u16(raw: u16) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| *k as u16 == raw)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Hello => "hello",
            Kind::Challenge => "challenge",
            Kind::Auth => "auth",
            Kind::Welcome => "welcome",
            Kind::Create => "create",
            Kind::Lookup => "lookup",
            Kind::Delete => "delete",
            Kind::Rename => "rename",
            Kind::List => "list",
            Kind::OpenWrite => "open-write",
            Kind::Allocate => "allocate",
            Kind::Locate => "locate",
            Kind::Close => "close",
            Kind::Renew => "renew",
            Kind::Release => "release",
            Kind::ClusterInfo => "cluster-info",
            Kind::RegisterDatanode => "register-datanode",
            Kind::Heartbeat => "heartbeat",
            Kind::DeregisterDatanode => "deregister-datanode",
            Kind::Write => "write",
            Kind::Read => "read",
            Kind::Attach => "attach",
        }
    }
}

/// A request message and the reply it gets.
pub(crate) trait Rpc: prost::Message + Default + 'static {
    const KIND: Kind;
    type Reply: prost::Message + Default + 'static;

    /// Whether doing it twice does what doing it once does: such a request is sent again when
    /// the connection broke with it in flight (the first may or may not have been done).
    fn idempotent(&self) -> bool;
}

macro_rules! rpc {
    ($($req:ident => $reply:ident : $kind:ident, $idempotent:literal),* $(,)?) => {
        $(impl Rpc for pb::$req {
            const KIND: Kind = Kind::$kind;
            type Reply = pb::$reply;

            fn idempotent(&self) -> bool {
                $idempotent
            }
        })*
    };
}

rpc! {
    CreateRequest => CreateReply: Create, false,
    LookupRequest => LookupReply: Lookup, true,
    DeleteRequest => DeleteReply: Delete, false,
    RenameRequest => RenameReply: Rename, false,
    ListRequest => ListReply: List, true,
    OpenWriteRequest => OpenWriteReply: OpenWrite, false,
    // Blocks a file has are returned as they are; only missing ones are allocated.
    AllocateRequest => BlocksReply: Allocate, true,
    LocateRequest => BlocksReply: Locate, true,
    RenewRequest => RenewReply: Renew, true,
    ReleaseRequest => ReleaseReply: Release, false,
    ClusterInfoRequest => ClusterInfoReply: ClusterInfo, true,
    RegisterDatanodeRequest => RegisterDatanodeReply: RegisterDatanode, false,
    HeartbeatRequest => HeartbeatReply: Heartbeat, true,
    DeregisterDatanodeRequest => DeregisterDatanodeReply: DeregisterDatanode, false,
    WriteRequest => WriteReply: Write, false,
    ReadRequest => ReadReply: Read, true,
    AttachRequest => AttachReply: Attach, false,
}

impl Rpc for pb::CloseRequest {
    const KIND: Kind = Kind::Close;
    type Reply = pb::CloseReply;

    /// Committing a size with the lease kept, yes; a close ends the lease, so a second fails.
    fn idempotent(&self) -> bool {
        self.keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_are_unique() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u16(kind as u16), Some(kind));
        }
        let mut numbers: Vec<u16> = Kind::ALL.iter().map(|k| *k as u16).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), Kind::ALL.len());
        assert_eq!(Kind::from_u16(0), None);
        assert_eq!(Kind::from_u16(999), None);
    }
}
