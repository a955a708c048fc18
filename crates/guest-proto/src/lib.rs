//! What the guest agent and the host say to each other.
//!
//! # Layout
//!
//! - [`context`]: the job context, a versioned JSON document that the host
//!   hands to the guest at boot through QEMU's fw_cfg
//!   (`-fw_cfg name=opt/org.vgrid/context,file=DIR/context.json`).
//! - [`frame`]: the framing of the two virtio-serial ports, with an encoder
//!   and an incremental decoder that never panics on garbage.
//! - [`message`]: what travels inside those frames: [`GuestMessage`] from the
//!   guest on the port [`OUT_PORT`], [`HostMessage`] from the host on the
//!   port [`CTL_PORT`].
//!
//! # The wiring, as QEMU sees it
//!
//! ```text
//! -fw_cfg name=opt/org.vgrid/context,file=DIR/context.json
//! -device virtio-serial-pci
//! -chardev file,id=vgout,path=DIR/agent.out
//! -device virtserialport,chardev=vgout,name=org.vgrid.out
//! -chardev socket,id=vgctl,path=DIR/ctl.sock,server=on,wait=off
//! -device virtserialport,chardev=vgctl,name=org.vgrid.ctl
//! -drive file=OVERLAY.qcow2,if=virtio,format=qcow2     (the guest's /dev/vda)
//! -device virtio-rng-pci                               (entropy at boot)
//! -no-reboot                                           (with panic=-1: a guest panic exits QEMU)
//! ```
//!
//! The stock image's kernel command line is in its manifest
//! (`kernel_cmdline`, today `console=ttyS0 quiet panic=-1`). Data
//! repositories and the staging share are virtio-9p devices
//! (`-fsdev local,id=fsN,path=HOSTDIR,security_model=none[,readonly=on]
//! -device virtio-9p-pci,fsdev=fsN,mount_tag=TAG`) named by their tag in the
//! context. `docs/images.md` has the whole boot sequence.
//!
//! Output reaches `agent.out` through QEMU itself, so it is kept even when
//! no vgrid process is alive; the host reads that file incrementally with a
//! [`frame::FrameDecoder`] (a partial frame at the end means "not yet
//! written"). The control socket is connected by the host only when it has
//! something to say; the agent polls its port and tolerates the host coming
//! and going (for example across a checkpoint and restore).
//!
//! # The guest's disk
//!
//! The stock image's `disk.qcow2` holds an ext4 file system. The agent
//! mounts the first virtio disk (`/dev/vda`) at [`SCRATCH_DIR`] and, when the
//! VM's overlay is larger than the file system, grows the file system online
//! to the size of the disk, so a VM may be given a larger overlay
//! (`qemu-img create -f qcow2 -b disk.qcow2 -F qcow2 overlay.qcow2 10G`).

pub mod context;
pub mod frame;
pub mod message;

pub use context::{ContextError, JobContext, Mount, RunRequest, Staging, User};
pub use frame::{DecodeError, Frame, FrameDecoder};
pub use message::{ExitStatus, GuestMessage, HostMessage, MessageError, StagingPhase};

/// The fw_cfg entry name under which the host passes the job context.
pub const FW_CFG_CONTEXT_NAME: &str = "opt/org.vgrid/context";

/// Where the guest reads the job context (needs the `qemu_fw_cfg` module).
pub const FW_CFG_CONTEXT_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.vgrid/context/raw";

/// The virtio-serial port name of the guest -> host channel.
pub const OUT_PORT: &str = "org.vgrid.out";

/// The virtio-serial port name of the host -> guest channel.
pub const CTL_PORT: &str = "org.vgrid.ctl";

/// Where the agent mounts the VM's writable disk; the default working
/// directory of the command.
pub const SCRATCH_DIR: &str = "/work";

/// The version of this protocol (frames and messages). The context carries
/// its own version ([`context::CONTEXT_VERSION`]).
pub const PROTOCOL_VERSION: u32 = 1;
