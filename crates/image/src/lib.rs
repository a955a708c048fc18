//! Guest images: the stock guest built from Debian packages, and imported
//! user disks.
//!
//! # Layout
//!
//! `$VGRID_DATA_DIR/images/<name>/` holds `manifest.json` ([`Manifest`]:
//! kind, files with BLAKE3 checksums, the hash of the build inputs, created
//! time) and the image's files:
//! - a **stock** image ([`ImageStore::build_stock`]): `vmlinux` (the
//!   Debian kernel, uncompressed so that QEMU boots it through its PVH entry
//!   without the slow self-decompression; `vmlinuz` for kernels without
//!   one), `initrd.img` (the guest's root file system, with the vgrid guest agent
//!   as `/init`) and `disk.qcow2` (an empty ext4 scratch disk, mounted by
//!   the agent at `/work`);
//! - an **imported** image ([`ImageStore::import`]): the user's disk as a
//!   standalone `disk.qcow2`, booted through firmware.
//!
//! VMs never write an image's disk: each gets a qcow2 overlay on it.
//!
//! # The guest agent
//!
//! The stock image needs a *static* `vgrid-guest-agent`. This crate's build
//! script builds it (a nested `cargo build --target x86_64-unknown-linux-gnu`
//! with `+crt-static`, in its own target directory under `OUT_DIR`) and
//! embeds it ([`EMBEDDED_AGENT`]); `$VGRID_GUEST_AGENT` overrides it at run
//! time. See `docs/images.md`.

pub mod cpio;
pub mod deb;
mod error;
pub mod kernel;
pub mod modules;
mod name;
mod stock;
mod store;
mod tools;
pub mod transfer;

pub use error::ImageError;
pub use name::validate_name;
pub use stock::{
    BuildOptions, BuildOutcome, KERNEL_CMDLINE, RECIPE_VERSION, agent_binary, check_static_elf,
};
pub use store::{
    DiskInfo, FileEntry, FileLock, Image, ImageKind, ImageStore, ListEntry, MANIFEST_FORMAT,
    Manifest, disk_info, hash_file,
};

/// The static guest agent built by `build.rs` (empty when that failed).
pub static EMBEDDED_AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vgrid-guest-agent"));

/// Why the agent could not be built (empty when it was).
pub static EMBEDDED_AGENT_ERROR: &str =
    include_str!(concat!(env!("OUT_DIR"), "/guest-agent-build-error.txt"));
