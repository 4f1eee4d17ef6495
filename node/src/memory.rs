//! A process's resident memory as Linux reports it (`/proc/<pid>/status`): what the embedded
//! cluster and the benchmarks print, and what memory tests assert.

/// Resident memory of process `pid` (`"self"` for this one): now and at its peak, in bytes;
/// `None` where the kernel does not say (not Linux, or no such process).
pub fn resident_memory(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib << 10)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Starts this process's peak resident memory afresh (`clear_refs`); false where the kernel
/// does not let it.
pub fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
