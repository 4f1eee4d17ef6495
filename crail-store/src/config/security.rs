//! `[security]`: the secrets and the local group, checked and copied into the sections that
//! use them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Config;
use crate::error::{Error, Result};
use crate::wire::handshake::Secret;

/// `[security]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Shared secret every connection must prove (at least 16 bytes); unset means open.
    pub secret: Option<String>,
    /// Secret datanodes prove to the namenode instead (at least 16 bytes, not `secret`): only
    /// its holders may register, heartbeat or deregister a datanode, and the block grants'
    /// key derives from it, so clients cannot forge grants. Needs `secret`; unset: any client
    /// may act as a datanode.
    pub datanode_secret: Option<String>,
    /// A group (numeric id) whose local processes may use the datanodes' and node services'
    /// Unix sockets besides the servers' own user (and root); unset: only those.
    pub local_group: Option<u32>,
}

impl Config {
    /// Copies `[security] secret` and `datanode_secret` into the sections that use them,
    /// checked as [`check_secrets`] does.
    pub fn apply_secret(&mut self) -> Result<()> {
        let parse = |key: &str, text: &Option<String>| match text {
            Some(text) => Secret::new(text).map(Some).ok_or_else(|| Error::Config {
                key: format!("security.{key}"),
                reason: "must not be empty".into(),
            }),
            None => Ok(None),
        };
        let secret = parse("secret", &self.security.secret)?;
        let datanode_secret = parse("datanode_secret", &self.security.datanode_secret)?;
        check_secrets(secret.as_ref(), datanode_secret.as_ref())?;
        self.namenode.secret = secret.clone();
        self.namenode.datanode_secret = datanode_secret.clone();
        self.datanode.secret = secret.clone();
        self.datanode.datanode_secret = datanode_secret;
        self.datanode.local_group = self.security.local_group;
        self.client.secret = secret;
        Ok(())
    }
}

/// Refuses secrets shorter than [`Secret::MIN_LEN`] bytes, a datanode secret without a
/// clients' one, and the same secret for both.
pub fn check_secrets(secret: Option<&Secret>, datanode_secret: Option<&Secret>) -> Result<()> {
    let short = |key: &str| Error::Config {
        key: format!("security.{key}"),
        reason: format!(
            "shorter than {} bytes: too easy to guess (`openssl rand -hex 16` makes one)",
            Secret::MIN_LEN
        ),
    };
    if secret.is_some_and(|s| s.len() < Secret::MIN_LEN) {
        return Err(short("secret"));
    }
    if let Some(dn) = datanode_secret {
        if dn.len() < Secret::MIN_LEN {
            return Err(short("datanode_secret"));
        }
        let reason = match secret {
            None => "needs security.secret (an open cluster has no datanode role)",
            Some(s) if s == dn => "must differ from security.secret",
            Some(_) => return Ok(()),
        };
        return Err(Error::Config {
            key: "security.datanode_secret".into(),
            reason: reason.into(),
        });
    }
    Ok(())
}
