//! Booting the stock image with hand-written QEMU arguments (TCG or KVM as
//! QEMU picks, 256 MB, 1 vCPU), for tests of the image and the agent and for
//! the boot-time benchmark. The product's launcher is `vgrid-vm`; this one
//! exists so that the image can be tested on its own.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vgrid_guest_proto::{ExitStatus, FW_CFG_CONTEXT_NAME, GuestMessage, HostMessage, JobContext};

use crate::{QemuTools, StockImage, exit_of, read_messages, temp_dir, wait_for};

/// Far above a TCG boot (a few seconds): only a guard against hanging.
const LIMIT: Duration = Duration::from_secs(300);

/// A virtio-9p share given to the guest.
pub struct Share {
    pub tag: &'static str,
    pub host: PathBuf,
    pub readonly: bool,
}

/// How to boot.
#[derive(Default)]
pub struct Options {
    pub shares: Vec<Share>,
    /// Attach a NIC backed by a passt process.
    pub network: bool,
    /// Virtual size of the VM's overlay (`qemu-img` syntax, e.g. `3G`).
    pub overlay_size: Option<&'static str>,
    /// A message sent on the control port once the command's stdout
    /// contains a marker (so the command is known to be ready).
    pub send: Option<SendWhen>,
    /// Boot this kernel instead of the image's (for comparisons).
    pub kernel: Option<PathBuf>,
}

/// What to send on the control port, and when.
pub struct SendWhen {
    pub after_stdout: &'static str,
    pub message: HostMessage,
}

/// What a finished boot left behind.
pub struct Finished {
    pub messages: Vec<GuestMessage>,
    pub console: String,
    /// From spawning QEMU to the `Started` frame appearing in agent.out.
    pub to_command: Option<Duration>,
}

impl Finished {
    /// The exit status; panics (showing the console) when there is none.
    pub fn exit(&self) -> ExitStatus {
        exit_of(&self.messages).unwrap_or_else(|| {
            panic!(
                "no exit status; messages: {:?}\nconsole:\n{}",
                self.messages, self.console
            )
        })
    }
    /// The `AgentError` messages.
    pub fn errors(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                GuestMessage::AgentError { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}

/// QEMU and the stock image, or `None` when the test should skip.
pub fn setup() -> Option<(QemuTools, StockImage)> {
    let qemu = crate::require_qemu()?;
    let image = crate::stock_image()?;
    Some((qemu, image))
}

fn kill_on_drop(child: &mut Option<Child>) {
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Boots the image with `ctx` (none: no fw_cfg entry) and waits for QEMU
/// to exit (the agent powers off).
pub fn boot(
    qemu: &QemuTools,
    stock: &StockImage,
    ctx: Option<&JobContext>,
    opts: Options,
) -> Finished {
    let dir = temp_dir();
    let d = dir.path();
    let img = &stock.image;
    let overlay = d.join("overlay.qcow2");
    let mut create = Command::new(&qemu.qemu_img);
    create
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(img.disk())
        .arg(&overlay);
    if let Some(size) = opts.overlay_size {
        create.arg(size);
    }
    assert!(create.status().expect("run qemu-img").success());

    let mut args: Vec<String> = vec![
        "-machine".into(),
        "q35,accel=tcg".into(),
        "-m".into(),
        "256".into(),
        "-smp".into(),
        "1".into(),
        "-nodefaults".into(),
        "-no-reboot".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", d.join("console.log").display()),
        "-kernel".into(),
        opts.kernel
            .clone()
            .or_else(|| img.kernel())
            .expect("stock image has a kernel")
            .display()
            .to_string(),
        "-initrd".into(),
        img.initrd()
            .expect("stock image has an initrd")
            .display()
            .to_string(),
        "-append".into(),
        img.kernel_cmdline()
            .expect("stock image has a command line")
            .into(),
        "-drive".into(),
        format!("file={},if=virtio,format=qcow2", overlay.display()),
        "-device".into(),
        "virtio-rng-pci".into(),
        "-device".into(),
        "virtio-serial-pci".into(),
        "-chardev".into(),
        format!("file,id=vgout,path={}", d.join("agent.out").display()),
        "-device".into(),
        "virtserialport,chardev=vgout,name=org.vgrid.out".into(),
        "-chardev".into(),
        format!(
            "socket,id=vgctl,path={},server=on,wait=off",
            d.join("ctl.sock").display()
        ),
        "-device".into(),
        "virtserialport,chardev=vgctl,name=org.vgrid.ctl".into(),
    ];
    if let Some(ctx) = ctx {
        let path = d.join("context.json");
        std::fs::write(&path, ctx.to_json().expect("valid context")).unwrap();
        args.push("-fw_cfg".into());
        args.push(format!(
            "name={FW_CFG_CONTEXT_NAME},file={}",
            path.display()
        ));
    }
    for (i, share) in opts.shares.iter().enumerate() {
        let ro = if share.readonly { ",readonly=on" } else { "" };
        args.push("-fsdev".into());
        args.push(format!(
            "local,id=fs{i},path={},security_model=none{ro}",
            share.host.display()
        ));
        args.push("-device".into());
        args.push(format!("virtio-9p-pci,fsdev=fs{i},mount_tag={}", share.tag));
    }
    let mut passt = None;
    if opts.network {
        let sock = d.join("passt.sock");
        // passt drops root privileges to `nobody` before binding its socket,
        // which could not reach this private directory: keep our own user.
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        let mut child = Command::new(&qemu.passt)
            .args(["--foreground", "--runas", &uid.to_string(), "--socket"])
            .arg(&sock)
            .arg("--log-file")
            .arg(d.join("passt.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start passt");
        let ready = wait_for("passt's socket", LIMIT, || {
            sock.exists() || child.try_wait().ok().flatten().is_some()
        });
        if !sock.exists() || ready.is_err() {
            let log = std::fs::read_to_string(d.join("passt.log")).unwrap_or_default();
            let _ = child.kill();
            panic!("passt did not start: {ready:?}\n{log}");
        }
        passt = Some(child);
        args.push("-netdev".into());
        args.push(format!(
            "stream,id=net0,server=off,addr.type=unix,addr.path={}",
            sock.display()
        ));
        args.push("-device".into());
        args.push("virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56".into());
    }

    let started = Instant::now();
    let mut vm = Some(
        Command::new(&qemu.qemu_system)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu"),
    );
    let agent_out = d.join("agent.out");
    let mut to_command = None;
    let mut pending = opts.send;
    let mut exited = None;
    while started.elapsed() < LIMIT {
        if let Some(status) = vm.as_mut().and_then(|c| c.try_wait().expect("wait qemu")) {
            exited = Some(status);
            break;
        }
        if to_command.is_none() {
            let msgs = read_messages(&agent_out);
            if msgs
                .iter()
                .any(|m| matches!(m, GuestMessage::Started { .. }))
            {
                to_command = Some(started.elapsed());
            }
        }
        if let Some(send) = &pending
            && crate::stdout_of(&read_messages(&agent_out)).contains(send.after_stdout)
        {
            let mut ctl = UnixStream::connect(d.join("ctl.sock")).expect("connect ctl.sock");
            ctl.write_all(&send.message.encode())
                .expect("send on ctl.sock");
            pending = None;
            // Keep the connection open until the guest powers off.
            std::mem::forget(ctl);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let console = std::fs::read_to_string(d.join("console.log")).unwrap_or_default();
    if exited.is_none() {
        kill_on_drop(&mut vm);
        kill_on_drop(&mut passt);
        panic!("the guest did not power off within {LIMIT:?}; console:\n{console}");
    }
    kill_on_drop(&mut passt);
    let mut stderr = String::new();
    if let Some(mut c) = vm.take()
        && let Some(mut e) = c.stderr.take()
    {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        exited.is_some_and(|s| s.success()),
        "qemu failed: {exited:?}\n{stderr}\nconsole:\n{console}"
    );
    Finished {
        messages: read_messages(&agent_out),
        console,
        to_command,
    }
}
