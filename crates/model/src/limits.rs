//! The bounds of every number a user or a node sends, in one place: the
//! job file, the API and the VM runtime check against these and say so
//! with the same words.

/// Most virtual CPUs one VM may have: QEMU's q35 machine without an
/// interrupt remapping IOMMU addresses at most 255 CPUs.
pub const MAX_CPUS: u32 = 255;
/// Least memory a guest boots with, in MiB.
pub const MIN_MEMORY_MB: u64 = 64;
/// Most memory one VM may have, in MiB (1 TiB).
pub const MAX_MEMORY_MB: u64 = 1 << 20;
/// Most VMs one job may have.
pub const MAX_VMS: u32 = 4096;
/// Priorities lie in `-PRIORITY_LIMIT..=PRIORITY_LIMIT`.
pub const PRIORITY_LIMIT: i32 = 1_000_000;
/// Most characters of a job name.
pub const MAX_JOB_NAME_CHARS: usize = 128;
/// Most bytes of a user name (a user's name is also their host directory).
pub const MAX_USER_NAME: usize = 32;
/// Most bytes of a node name.
pub const MAX_NODE_NAME: usize = 64;

/// Most CPUs a node may announce.
pub const MAX_NODE_CPUS: u32 = 1 << 16;
/// Most memory a node may announce, in MiB (a thousand TiB).
pub const MAX_NODE_MEMORY_MB: u64 = 1 << 30;
/// Most labels of a node, and their longest key and value.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_LEN: usize = 256;
/// Most jobs a registering node may say it still runs.
pub const MAX_RUNNING: usize = 65_536;
/// Most events in one report.
pub const MAX_EVENTS: usize = 1024;
/// Longest reason or location text in an event.
pub const MAX_TEXT_LEN: usize = 4096;
/// Longest pause a checkpoint may report (a week).
pub const MAX_PAUSED_MS: u64 = 7 * 24 * 3_600_000;
/// The largest integer the store holds.
pub const MAX_STORED: u64 = i64::MAX as u64;

/// Longest idempotency key a client may send with a submission.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// The sentence every refusal of a number uses.
pub fn out_of_range(
    what: &str,
    value: impl std::fmt::Display,
    min: impl std::fmt::Display,
    max: impl std::fmt::Display,
) -> String {
    format!("{what} is {value}; use {min} to {max}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentence_names_the_range() {
        assert_eq!(
            out_of_range("cpus", 300, 1, MAX_CPUS),
            "cpus is 300; use 1 to 255"
        );
    }
}
