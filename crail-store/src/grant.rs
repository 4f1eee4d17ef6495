//! Block grants: the namenode's signed permission to touch one block, checked by its datanode.
//!
//! The namenode gives every block a new *generation* each time it allocates it and signs, with
//! each location it hands out, the datanode id, the block, the generation and whether writes
//! are allowed (HMAC-SHA256 truncated to 16 bytes). A datanode serves a request only with a
//! valid grant for each block it touches, and remembers per block the newest generation it
//! has seen: a request with an older one is [`Error::Fenced`]. So a writer whose lease ended
//! (a long pause, a deleted file) cannot touch the block's next owner's bytes, and a client
//! cannot write blocks it was never given.
//!
//! The key never travels: the namenode draws a salt when it starts and sends it with every
//! datanode registration; both sides derive the key from the datanodes' secret and the salt.
//! Without a secret the key follows from the salt alone: generations still fence stale
//! writers, but a client can forge grants (see SECURITY.md).

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::proto as pb;
use crate::wire::handshake::Secret;

pub(crate) use crate::types::MAC_LEN;
/// Bytes of the namenode's salt.
pub(crate) const SALT_LEN: usize = 32;

/// The key grants are signed with (its keyed HMAC state, cloned per grant).
#[derive(Clone)]
pub(crate) struct GrantKey(Hmac<Sha256>);

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(..)")
    }
}

impl GrantKey {
    /// The key of a namenode whose salt is `salt`, for datanodes that hold `secret`.
    pub(crate) fn derive(secret: Option<&Secret>, salt: &[u8]) -> Self {
        let key = match secret {
            Some(secret) => secret.derive(b"crail-grant-key-v1", salt),
            None => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"crail-open-cluster")
                    .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
                mac.update(b"crail-grant-key-v1");
                mac.update(salt);
                mac.finalize().into_bytes().into()
            }
        };
        Self(
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
        )
    }

    /// A fresh random salt.
    pub(crate) fn salt() -> Result<[u8; SALT_LEN]> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(salt)
    }

    fn mac(&self, datanode: u64, block: u64, generation: u64, write: bool) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(b"crail-grant-v1");
        mac.update(&datanode.to_le_bytes());
        mac.update(&block.to_le_bytes());
        mac.update(&generation.to_le_bytes());
        mac.update(&[u8::from(write)]);
        mac
    }

    /// The grant for block `block` (its storage offset) of datanode `datanode`.
    pub(crate) fn sign(
        &self,
        datanode: u64,
        block: u64,
        generation: u64,
        write: bool,
    ) -> pb::Grant {
        let tag = self
            .mac(datanode, block, generation, write)
            .finalize()
            .into_bytes();
        pb::Grant {
            block,
            generation,
            write,
            mac: bytes::Bytes::copy_from_slice(&tag[..MAC_LEN]),
        }
    }

    /// Checks that `grant` is this key's, for datanode `datanode`, covers `[offset, offset +
    /// len)` of blocks of `block_size` bytes, and allows writes if `write` (what [`Checked`]
    /// does with a memory).
    #[cfg(test)]
    pub(crate) fn check(
        &self,
        grant: Option<&pb::Grant>,
        datanode: u64,
        offset: u64,
        block_size: u64,
        write: bool,
    ) -> Result<()> {
        let grant = precheck(grant, offset, block_size, write)?;
        self.verify(grant, datanode, offset)
    }

    fn verify(&self, grant: &pb::Grant, datanode: u64, offset: u64) -> Result<()> {
        self.mac(datanode, grant.block, grant.generation, grant.write)
            .verify_truncated_left(&grant.mac)
            .map_err(|_| Error::GrantRefused {
                offset,
                reason: "its signature is not the namenode's (forged, or from before the namenode or this datanode restarted)".into(),
            })
    }
}

/// The checks of a grant that need no key: present, for the block of `offset`, allowing a
/// write if `write`, a signature of the right length.
fn precheck(
    grant: Option<&pb::Grant>,
    offset: u64,
    block_size: u64,
    write: bool,
) -> Result<&pb::Grant> {
    let refuse = |reason: &str| Error::GrantRefused {
        offset,
        reason: reason.into(),
    };
    let Some(grant) = grant else {
        return Err(refuse("the request carries none"));
    };
    if grant.block != offset - offset % block_size {
        return Err(refuse("the grant is for another block"));
    }
    if write && !grant.write {
        return Err(refuse("the grant is read-only and the request writes"));
    }
    // The length too: a truncated tag would check against a prefix.
    if grant.mac.len() != MAC_LEN {
        return Err(refuse("its signature has the wrong length"));
    }
    Ok(grant)
}

/// The grants one connection has had checked: a grant seen before costs a lookup and a
/// comparison, not a MAC (a reader or writer sends the same grant with every request to its
/// block). Forgotten when the datanode's identity changes, or past `MAX` grants.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    datanode: u64,
    seen: HashMap<(u64, u64, bool), [u8; MAC_LEN]>,
}

impl Checked {
    const MAX: usize = 4096;

    /// [`GrantKey::check`], remembering what passed.
    pub(crate) fn check(
        &mut self,
        key: &GrantKey,
        grant: Option<&pb::Grant>,
        datanode: u64,
        offset: u64,
        block_size: u64,
        write: bool,
    ) -> Result<()> {
        let grant = precheck(grant, offset, block_size, write)?;
        if self.datanode != datanode {
            self.seen.clear();
            self.datanode = datanode;
        }
        let fields = (grant.block, grant.generation, grant.write);
        if let Some(mac) = self.seen.get(&fields) {
            // No early exit: the time says nothing about how much of a forged tag matched.
            let differ = mac
                .iter()
                .zip(grant.mac.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if differ == 0 {
                return Ok(());
            }
        }
        key.verify(grant, datanode, offset)?;
        if self.seen.len() >= Self::MAX {
            self.seen.clear();
        }
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&grant.mac);
        self.seen.insert(fields, mac);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u64 = 1 << 20;

    #[test]
    fn a_signed_grant_checks_and_every_change_is_refused() {
        let secret = Secret::new("s3cr3t-s3cr3t-s3cr3t").unwrap();
        let salt = GrantKey::salt().unwrap();
        let key = GrantKey::derive(Some(&secret), &salt);
        let grant = key.sign(4, 3 * BS, 17, true);
        key.check(Some(&grant), 4, 3 * BS + 100, BS, true).unwrap();
        key.check(Some(&grant), 4, 3 * BS, BS, false).unwrap();
        let refused = |r: Result<()>| matches!(r, Err(Error::GrantRefused { .. }));
        assert!(refused(key.check(None, 4, 3 * BS, BS, false)));
        assert!(
            refused(key.check(Some(&grant), 5, 3 * BS, BS, true)),
            "other datanode"
        );
        assert!(
            refused(key.check(Some(&grant), 4, 4 * BS, BS, true)),
            "other block"
        );
        let mut older = grant.clone();
        older.generation = 16;
        assert!(
            refused(key.check(Some(&older), 4, 3 * BS, BS, true)),
            "changed generation"
        );
        let read = key.sign(4, 3 * BS, 17, false);
        assert!(
            refused(key.check(Some(&read), 4, 3 * BS, BS, true)),
            "read-only"
        );
        let mut upgraded = read.clone();
        upgraded.write = true;
        assert!(
            refused(key.check(Some(&upgraded), 4, 3 * BS, BS, true)),
            "forged upgrade"
        );
        let mut short = grant.clone();
        short.mac.truncate(4);
        assert!(
            refused(key.check(Some(&short), 4, 3 * BS, BS, true)),
            "short MAC"
        );
        let other_salt = GrantKey::derive(Some(&secret), &GrantKey::salt().unwrap());
        assert!(
            refused(other_salt.check(Some(&grant), 4, 3 * BS, BS, true)),
            "other namenode"
        );
        let other_secret = GrantKey::derive(Secret::new("another secret!!").as_ref(), &salt);
        assert!(
            refused(other_secret.check(Some(&grant), 4, 3 * BS, BS, true)),
            "other secret"
        );
        let open = GrantKey::derive(None, &salt);
        assert!(
            refused(open.check(Some(&grant), 4, 3 * BS, BS, true)),
            "open key"
        );
    }
}
