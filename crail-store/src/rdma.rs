//! RDMA: the `rdma` cargo feature.
//!
//! With the feature, [`probe`] asks libibverbs (loaded at run time by `sideway`, so the build
//! needs no RDMA library) for devices. There is no RDMA data path yet, so every outcome is a
//! refusal, but a precise one: no RDMA support in the kernel or no libibverbs, no device, or
//! devices present and no transport to use them. Without the feature, the refusal says how to
//! build with it. Either way a datanode or client asked for RDMA stops with one clear line
//! instead of silently falling back to TCP.

use crate::error::{Error, Result};

fn refuse(reason: String) -> Error {
    Error::Unsupported {
        feature: "rdma".into(),
        reason,
    }
}

/// Checks whether RDMA can be used here. Today: always an [`Error::Unsupported`] that says why.
#[cfg(feature = "rdma")]
pub fn probe() -> Result<()> {
    use sideway::ibverbs::device::{DeviceInfo, DeviceList};
    let list = DeviceList::new().map_err(|e| {
        let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
        refuse(format!(
            "no RDMA device: cannot list devices ({cause}; is rdma-core installed and an RDMA NIC present?)"
        ))
    })?;
    if list.is_empty() {
        return Err(refuse("no RDMA device found".into()));
    }
    let names: Vec<String> = list.iter().map(|d| d.name()).collect();
    Err(refuse(format!(
        "found {} ({}), but this build has no RDMA data path yet; use tcp",
        if names.len() == 1 {
            "a device"
        } else {
            "devices"
        },
        names.join(", ")
    )))
}

/// Checks whether RDMA can be used here. Without the `rdma` feature: never.
#[cfg(not(feature = "rdma"))]
pub fn probe() -> Result<()> {
    Err(refuse(
        "this build has no RDMA support (rebuild with `--features rdma`)".into(),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn refuses_with_one_clear_line() {
        let err = super::probe().unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("rdma unavailable: "), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}
