//! Building the stock guest: a Debian kernel, a gzip'd newc initramfs
//! (busybox-static, the needed kernel modules, the vgrid guest agent as
//! `/init`) and a small ext4 scratch disk in qcow2.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;

use crate::cpio::CpioWriter;
use crate::deb::{self, Package};
use crate::error::ImageError;
use crate::kernel;
use crate::modules::{BOOT_MODULES, ModuleIndex, NINEP_MODULES};
use crate::name::validate_name;
use crate::store::{
    FileEntry, Image, ImageKind, ImageStore, MANIFEST_FORMAT, Manifest, hash_file, make_private,
    now_unix, write_manifest,
};
use crate::tools::{self, MKFS_EXT4, QEMU_IMG};

/// Bump when the initramfs layout or the build steps change, so that
/// existing images are rebuilt.
pub const RECIPE_VERSION: u32 = 3;

/// The kernel command line of the stock guest. `quiet` keeps the serial
/// console (slow under TCG) short; `panic=-1` reboots at once on a kernel
/// panic, which QEMU started with `-no-reboot` turns into an exit.
/// `no_timer_check` skips the IO-APIC timer test, which a guest emulated on
/// a loaded host can fail ("IO-APIC + timer doesn't work!").
pub const KERNEL_CMDLINE: &str = "console=ttyS0 quiet panic=-1 no_timer_check";

/// The Debian packages the stock guest is made of.
const KERNEL_META_PACKAGE: &str = "linux-image-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";

/// The scratch disk: 1 GiB of ext4 (the agent grows it to a larger overlay).
const DISK_BYTES: u64 = 1 << 30;
const DISK_RECIPE: &str = "ext4 1GiB label=vgrid-work -m0 lazy_itable_init fixed-uuid v1";
const DISK_UUID: &str = "6f1c7f2e-3a5b-4c1d-9e8f-0a1b2c3d4e5f";

/// The DHCP hook run by busybox `udhcpc` in the guest.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc hook of the vgrid stock guest: applies the lease from passt.
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound|renew)
	ip -4 addr flush dev "$interface"
	ip -4 addr add "$ip/${mask:-24}" dev "$interface"
	[ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
	for r in $router; do
		ip -4 route add default via "$r" dev "$interface" && break
	done
	: > /etc/resolv.conf
	[ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
	for d in $dns; do
		echo "nameserver $d" >> /etc/resolv.conf
	done
	;;
esac
exit 0
"#;

/// How to build.
pub struct BuildOptions<'a> {
    /// Where downloaded `.deb` files are kept; `$VGRID_DATA_DIR/cache` when
    /// `None` (the `VGRID_IMAGE_CACHE` environment variable is read by the
    /// CLI and the test kit, not here).
    pub cache_dir: Option<PathBuf>,
    /// The static guest agent; the one embedded at build time (or
    /// `$VGRID_GUEST_AGENT`) when `None`.
    pub agent: Option<Vec<u8>>,
    /// Rebuild even when the inputs have not changed.
    pub force: bool,
    /// Progress lines for people.
    pub progress: &'a dyn Fn(&str),
}

/// What a build did.
#[derive(Debug)]
pub struct BuildOutcome {
    pub image: Image,
    /// False when the existing image was already up to date.
    pub rebuilt: bool,
}

/// Everything the image depends on; its BLAKE3 is the manifest's
/// `inputs_hash`.
#[derive(Serialize)]
struct Inputs<'a> {
    recipe: u32,
    packages: &'a [Package],
    agent_blake3: String,
    modules: &'a [&'a str],
    modules_9p: &'a [&'a str],
    kernel_cmdline: &'a str,
    disk_recipe: &'a str,
}

/// The guest agent to put into the image.
pub fn agent_binary(override_bytes: Option<Vec<u8>>) -> Result<Vec<u8>, ImageError> {
    let bytes = if let Some(bytes) = override_bytes {
        bytes
    } else if let Some(path) = std::env::var_os("VGRID_GUEST_AGENT").filter(|p| !p.is_empty()) {
        fs::read(&path).map_err(ImageError::io(PathBuf::from(&path)))?
    } else if !crate::EMBEDDED_AGENT.is_empty() {
        crate::EMBEDDED_AGENT.to_vec()
    } else {
        let why = crate::EMBEDDED_AGENT_ERROR.trim();
        return Err(ImageError::NoAgent(if why.is_empty() {
            "it was not embedded at build time".into()
        } else {
            format!("its build failed: {why}")
        }));
    };
    check_static_elf(&bytes).map_err(ImageError::NoAgent)?;
    Ok(bytes)
}

/// Refuses anything but a static x86-64 ELF executable (no `PT_INTERP`).
pub fn check_static_elf(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err("the agent binary is not a 64-bit little-endian ELF file".into());
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != 62 {
        return Err(format!(
            "the agent binary is for ELF machine {machine}, not x86-64"
        ));
    }
    let u64_at = |o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let phoff = u64_at(0x20) as usize;
    let phentsize = u16::from_le_bytes([bytes[0x36], bytes[0x37]]) as usize;
    let phnum = u16::from_le_bytes([bytes[0x38], bytes[0x39]]) as usize;
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(kind) = bytes.get(at..at + 4) else {
            return Err("the agent binary's program headers are truncated".into());
        };
        if u32::from_le_bytes([kind[0], kind[1], kind[2], kind[3]]) == 3 {
            return Err("the agent binary is dynamically linked; it must be static".into());
        }
    }
    Ok(())
}

impl ImageStore {
    /// Builds (or confirms up to date) the stock image `name`.
    pub fn build_stock(&self, name: &str, opts: &BuildOptions) -> Result<BuildOutcome, ImageError> {
        validate_name(name)?;
        let progress = opts.progress;
        let _lock = self.lock(name)?;

        progress("looking up Debian packages");
        let meta = deb::lookup(KERNEL_META_PACKAGE)?;
        let kernel_pkg_name =
            deb::first_dependency(&meta.depends).ok_or_else(|| ImageError::Package {
                package: KERNEL_META_PACKAGE.into(),
                why: "it depends on no kernel package".into(),
            })?;
        let packages = vec![
            deb::lookup(&kernel_pkg_name)?,
            deb::lookup(BUSYBOX_PACKAGE)?,
        ];
        let agent = agent_binary(opts.agent.clone())?;
        let inputs = Inputs {
            recipe: RECIPE_VERSION,
            packages: &packages,
            agent_blake3: blake3::hash(&agent).to_hex().to_string(),
            modules: BOOT_MODULES,
            modules_9p: NINEP_MODULES,
            kernel_cmdline: KERNEL_CMDLINE,
            disk_recipe: DISK_RECIPE,
        };
        let inputs_json = serde_json::to_value(&inputs).map_err(|e| ImageError::BadFile {
            path: self.image_dir(name),
            why: e.to_string(),
        })?;
        let inputs_hash = blake3::hash(inputs_json.to_string().as_bytes())
            .to_hex()
            .to_string();
        let disk_recipe_hash = blake3::hash(DISK_RECIPE.as_bytes()).to_hex().to_string();

        let existing = match self.get(name) {
            Ok(img) => Some(img),
            Err(ImageError::NotFound(_)) => None,
            Err(e) if self.image_dir(name).exists() => {
                progress(&format!(
                    "the existing image is unreadable ({e}): rebuilding it"
                ));
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(img) = &existing {
            if img.kind() != ImageKind::Stock {
                return Err(ImageError::Exists(name.to_string()));
            }
            if !opts.force && img.manifest.inputs_hash == inputs_hash && img.files_present() {
                progress(&format!("image `{name}` is up to date"));
                return Ok(BuildOutcome {
                    image: img.clone(),
                    rebuilt: false,
                });
            }
        }
        let keep_disk = existing.as_ref().is_some_and(|img| {
            img.manifest.disk_recipe_hash.as_deref() == Some(&disk_recipe_hash)
                && img.disk().is_file()
        });
        if !keep_disk && existing.is_some() {
            if let Some((vm, vm_json)) = self.users_of(name).into_iter().next() {
                return Err(ImageError::InUse {
                    name: name.to_string(),
                    vm,
                    vm_json,
                });
            }
        }

        let cache = opts
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.default_cache_dir());
        let deb_dir = cache.join("debs");
        let mut debs = Vec::new();
        for pkg in &packages {
            debs.push(deb::fetch(pkg, &deb_dir, progress)?);
        }

        let work = self.work_dir(name)?;
        let result = self.assemble(name, &work, &debs, &agent, keep_disk, progress);
        let outcome = result.and_then(|parts| {
            let manifest = Manifest {
                format: MANIFEST_FORMAT,
                name: name.to_string(),
                kind: ImageKind::Stock,
                created_unix: now_unix(),
                inputs_hash,
                inputs: Some(inputs_json),
                disk_recipe_hash: Some(disk_recipe_hash),
                files: parts.files,
                kernel: Some(parts.kernel_file.into()),
                initrd: Some("initrd.img".into()),
                kernel_cmdline: Some(KERNEL_CMDLINE.into()),
                kernel_version: Some(parts.kernel_version),
                disk: "disk.qcow2".into(),
                disk_format: "qcow2".into(),
                disk_virtual_size: DISK_BYTES,
                has_agent: true,
                source: None,
            };
            self.install(name, &work, &manifest, parts.kernel_file, keep_disk)?;
            Ok(manifest)
        });
        let _ = fs::remove_dir_all(&work);
        let manifest = outcome?;
        progress(&format!(
            "image `{name}` built: kernel {}, {} files",
            manifest.kernel_version.as_deref().unwrap_or("?"),
            manifest.files.len()
        ));
        Ok(BuildOutcome {
            image: self.get(name)?,
            rebuilt: true,
        })
    }

    /// Unpacks the packages and writes the kernel (`vmlinux`, or `vmlinuz`
    /// when it cannot be booted uncompressed), initrd.img and (unless kept)
    /// disk.qcow2 into `work`.
    fn assemble(
        &self,
        name: &str,
        work: &Path,
        debs: &[PathBuf],
        agent: &[u8],
        keep_disk: bool,
        progress: &dyn Fn(&str),
    ) -> Result<Parts, ImageError> {
        let root = work.join("unpacked");
        for deb_file in debs {
            progress(&format!(
                "unpacking {}",
                deb_file.file_name().unwrap_or_default().to_string_lossy()
            ));
            deb::extract(deb_file, &root)?;
        }
        let modules_root = root.join("lib/modules");
        let kernel_version = single_subdir(&modules_root)?;
        let vmlinuz_src = root.join("boot").join(format!("vmlinuz-{kernel_version}"));
        let modules_dir = modules_root.join(&kernel_version);

        progress("resolving kernel modules");
        let index = ModuleIndex::scan(&modules_dir)?;
        let boot = index.resolve(BOOT_MODULES)?;
        let ninep = index.resolve_after(NINEP_MODULES, &boot)?;
        progress(&format!(
            "{} of {} kernel modules needed ({} at boot, {} for 9p)",
            boot.len() + ninep.len(),
            index.len(),
            boot.len(),
            ninep.len()
        ));

        progress("writing the initramfs");
        let busybox = root.join("bin/busybox");
        let applets = busybox_applets(&busybox)?;
        let gz = GzEncoder::new(Vec::new(), Compression::new(6));
        let mut cpio = CpioWriter::new(gz);
        let wr = |e: std::io::Error| ImageError::io(work.join("initrd.img"))(e);
        for dir in [
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "etc",
            "etc/vgrid",
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "work",
            "root",
            "lib",
            "lib/modules",
            "usr/share",
            "usr/share/udhcpc",
            "var",
            "var/run",
        ] {
            let perm = if dir == "tmp" { 0o1777 } else { 0o755 };
            cpio.dir(dir, perm).map_err(wr)?;
        }
        cpio.char_device("dev/console", 0o600, 5, 1).map_err(wr)?;
        cpio.char_device("dev/null", 0o666, 1, 3).map_err(wr)?;
        cpio.file("init", 0o755, agent).map_err(wr)?;
        let busybox_bytes = fs::read(&busybox).map_err(ImageError::io(&busybox))?;
        cpio.file("bin/busybox", 0o755, &busybox_bytes)
            .map_err(wr)?;
        for applet in &applets {
            cpio.symlink(applet, "/bin/busybox").map_err(wr)?;
        }
        let mut made_dirs = std::collections::BTreeSet::new();
        for (list_path, group) in [
            ("etc/vgrid/modules", &boot),
            ("etc/vgrid/modules-9p", &ninep),
        ] {
            let mut list = String::new();
            for module in group.iter() {
                let rel = Path::new("lib/modules")
                    .join(&kernel_version)
                    .join(&module.path);
                let rel_str = rel.to_string_lossy().into_owned();
                for anc in rel
                    .ancestors()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    let a = anc.to_string_lossy().into_owned();
                    if !a.is_empty()
                        && a != "lib"
                        && a != "lib/modules"
                        && made_dirs.insert(a.clone())
                    {
                        cpio.dir(&a, 0o755).map_err(wr)?;
                    }
                }
                let src = modules_dir.join(&module.path);
                let bytes = fs::read(&src).map_err(ImageError::io(&src))?;
                cpio.file(&rel_str, 0o644, &bytes).map_err(wr)?;
                list.push('/');
                list.push_str(&rel_str);
                list.push('\n');
            }
            cpio.file(list_path, 0o644, list.as_bytes()).map_err(wr)?;
        }
        let module_count = boot.len() + ninep.len();
        cpio.file("etc/vgrid/udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes())
            .map_err(wr)?;
        cpio.file(
            "etc/vgrid/image",
            0o644,
            format!("name={name}\nrecipe={RECIPE_VERSION}\nkernel={kernel_version}\n").as_bytes(),
        )
        .map_err(wr)?;
        cpio.file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .map_err(wr)?;
        cpio.file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")
            .map_err(wr)?;
        cpio.file("etc/hostname", 0o644, b"vgrid\n").map_err(wr)?;
        cpio.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n")
            .map_err(wr)?;
        cpio.file("etc/resolv.conf", 0o644, b"").map_err(wr)?;
        let initrd = cpio.finish().map_err(wr)?.finish().map_err(wr)?;

        let mut files = Vec::new();
        let initrd_path = work.join("initrd.img");
        write_synced(&initrd_path, &initrd)?;
        let bz = fs::read(&vmlinuz_src).map_err(ImageError::io(&vmlinuz_src))?;
        let (kernel_file, kernel_bytes) = match kernel::bzimage_payload(&bz) {
            Ok(payload) => {
                // A missing decompressor only costs boot time: fall back.
                let elf = kernel::decompress(payload, work).unwrap_or_else(|e| {
                    progress(&format!("kernel: cannot decompress it ({e})"));
                    Vec::new()
                });
                if kernel::has_pvh_entry(&elf) {
                    progress(&format!(
                        "kernel: uncompressed ELF with a PVH entry ({})",
                        deb::human(elf.len() as u64)
                    ));
                    ("vmlinux", elf)
                } else {
                    progress(
                        "kernel: no PVH entry; booting the compressed bzImage (slower under TCG)",
                    );
                    ("vmlinuz", bz)
                }
            }
            Err(why) => {
                progress(&format!("kernel: {why}; booting the bzImage as it is"));
                ("vmlinuz", bz)
            }
        };
        let kernel_path = work.join(kernel_file);
        write_synced(&kernel_path, &kernel_bytes)?;
        drop(kernel_bytes);
        progress(&format!(
            "initramfs {} ({} modules, {} busybox applets)",
            deb::human(initrd.len() as u64),
            module_count,
            applets.len()
        ));

        let disk_path = work.join("disk.qcow2");
        if keep_disk {
            progress("keeping the existing scratch disk");
        } else {
            progress("creating the scratch disk (ext4, 1 GiB virtual)");
            make_disk(work, &disk_path)?;
        }
        fs::remove_dir_all(&root).map_err(ImageError::io(&root))?;

        for (file, path) in [(kernel_file, &kernel_path), ("initrd.img", &initrd_path)] {
            let (size, blake3) = hash_file(path)?;
            files.push(FileEntry {
                name: file.into(),
                size,
                blake3,
            });
        }
        let disk_for_hash = if keep_disk {
            self.image_dir(name).join("disk.qcow2")
        } else {
            disk_path
        };
        let (size, blake3) = hash_file(&disk_for_hash)?;
        files.push(FileEntry {
            name: "disk.qcow2".into(),
            size,
            blake3,
        });
        Ok(Parts {
            files,
            kernel_version,
            kernel_file,
        })
    }

    /// Moves the built files into place, the manifest last.
    fn install(
        &self,
        name: &str,
        work: &Path,
        manifest: &Manifest,
        kernel_file: &str,
        keep_disk: bool,
    ) -> Result<(), ImageError> {
        let dir = self.image_dir(name);
        if !dir.exists() {
            write_manifest(work, manifest)?;
            make_private(work)?;
            return fs::rename(work, &dir).map_err(ImageError::io(&dir));
        }
        make_private(work)?;
        // Replace files one by one: a running VM keeps its kernel and
        // initramfs in memory, and its overlay keeps pointing at the same
        // disk file when the disk is kept.
        let _ = fs::remove_file(dir.join("manifest.json"));
        // A kernel in the other format is left over from an older recipe.
        for old in ["vmlinux", "vmlinuz"] {
            if old != kernel_file {
                let _ = fs::remove_file(dir.join(old));
            }
        }
        let mut names = vec![kernel_file, "initrd.img"];
        if !keep_disk {
            names.push("disk.qcow2");
        }
        for file in names {
            let to = dir.join(file);
            fs::rename(work.join(file), &to).map_err(ImageError::io(&to))?;
        }
        write_manifest(&dir, manifest)?;
        // An image an older vgrid built open is closed too.
        make_private(&dir)
    }
}

struct Parts {
    files: Vec<FileEntry>,
    kernel_version: String,
    /// `vmlinux` or `vmlinuz`.
    kernel_file: &'static str,
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut f = File::create(path).map_err(ImageError::io(path))?;
    f.write_all(bytes).map_err(ImageError::io(path))?;
    f.sync_all().map_err(ImageError::io(path))
}

/// The only directory under `dir` (the kernel version under lib/modules).
fn single_subdir(dir: &Path) -> Result<String, ImageError> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(ImageError::io(dir))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match names.len() {
        1 => Ok(names.remove(0)),
        n => Err(ImageError::BadFile {
            path: dir.to_path_buf(),
            why: format!("expected one kernel version directory, found {n}"),
        }),
    }
}

/// The applet paths of busybox (`bin/sh`, `usr/bin/awk`, ...), from the
/// binary itself (it is static and runs on the build host).
fn busybox_applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let mut cmd = std::process::Command::new(busybox);
    cmd.arg("--list-full");
    let out = tools::run(cmd, None)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut applets: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("..") && !l.starts_with('/'))
        // PID 1 is the agent: no busybox init or linuxrc.
        .filter(|l| *l != "linuxrc" && *l != "sbin/init" && *l != "bin/busybox")
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    if applets.is_empty() {
        return Err(ImageError::BadFile {
            path: busybox.to_path_buf(),
            why: "busybox --list-full listed no applets".into(),
        });
    }
    Ok(applets)
}

/// An empty ext4 file system in a qcow2 file, made the same way every time.
fn make_disk(work: &Path, out: &Path) -> Result<(), ImageError> {
    let raw = work.join("disk.raw");
    let f = File::create(&raw).map_err(ImageError::io(&raw))?;
    f.set_len(DISK_BYTES).map_err(ImageError::io(&raw))?;
    drop(f);
    let mut mkfs = tools::command(MKFS_EXT4)?;
    mkfs.args(["-q", "-F", "-L", "vgrid-work", "-m", "0", "-U", DISK_UUID])
        .args([
            "-E",
            &format!("lazy_itable_init=1,lazy_journal_init=1,hash_seed={DISK_UUID}"),
        ])
        .arg(&raw)
        .env("E2FSPROGS_FAKE_TIME", "1");
    tools::run(mkfs, None)?;
    let mut convert = tools::command(QEMU_IMG)?;
    convert
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(out);
    tools::run(convert, None)?;
    fs::remove_file(&raw).map_err(ImageError::io(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_agent_is_a_static_elf() {
        if crate::EMBEDDED_AGENT.is_empty() {
            panic!(
                "the guest agent was not embedded: {}",
                crate::EMBEDDED_AGENT_ERROR
            );
        }
        check_static_elf(crate::EMBEDDED_AGENT).unwrap();
    }

    #[test]
    fn non_static_or_foreign_binaries_are_refused() {
        assert!(check_static_elf(b"#!/bin/sh\n").is_err());
        let host_ls = fs::read("/bin/ls").unwrap();
        let err = check_static_elf(&host_ls).unwrap_err();
        assert!(err.contains("dynamically linked"), "{err}");
        let mut arm = crate::EMBEDDED_AGENT.to_vec();
        if arm.len() > 20 {
            arm[18] = 183;
            arm[19] = 0;
            assert!(check_static_elf(&arm).unwrap_err().contains("machine 183"));
        }
    }
}
