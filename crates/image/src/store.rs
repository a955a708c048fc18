//! The image store: `$VGRID_DATA_DIR/images/<name>/` with a `manifest.json`
//! written last (temp file, fsync, rename), so a directory without a valid
//! manifest is never mistaken for an image.
//!
//! Images are vgrid's: directories 0700, files 0600 (an imported disk may
//! hold anything). QEMU opens them before dropping its privileges, so the
//! VM user needs no access.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::name::validate_name;
use crate::tools::{self, QEMU_IMG};

/// The manifest format this crate writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

pub use vgrid_model::ImageKind;

/// One file of an image, with its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub blake3: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub kind: ImageKind,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// BLAKE3 of everything the image was built from: for a stock image
    /// the recipe version, the packages' SHA-256 sums and the agent binary;
    /// for an imported one, the source disk's checksum.
    pub inputs_hash: String,
    /// The build inputs, for people (stock images).
    #[serde(default)]
    pub inputs: Option<serde_json::Value>,
    /// BLAKE3 of the scratch disk's recipe (stock images): the disk is
    /// remade only when this changes, so VM overlays on it stay valid.
    #[serde(default)]
    pub disk_recipe_hash: Option<String>,
    pub files: Vec<FileEntry>,
    /// Kernel and initramfs file names (stock images).
    #[serde(default)]
    pub kernel: Option<String>,
    #[serde(default)]
    pub initrd: Option<String>,
    /// The kernel command line to boot with (stock images).
    #[serde(default)]
    pub kernel_cmdline: Option<String>,
    #[serde(default)]
    pub kernel_version: Option<String>,
    /// The disk file name and format (always qcow2 today).
    pub disk: String,
    pub disk_format: String,
    /// The disk's virtual size in bytes.
    pub disk_virtual_size: u64,
    /// Whether the vgrid guest agent runs inside.
    pub has_agent: bool,
    /// Where an imported disk came from.
    #[serde(default)]
    pub source: Option<String>,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Image {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
    pub fn kind(&self) -> ImageKind {
        self.manifest.kind
    }
    /// The kernel to pass with `-kernel` (stock images).
    pub fn kernel(&self) -> Option<PathBuf> {
        self.manifest.kernel.as_ref().map(|k| self.dir.join(k))
    }
    /// The initramfs to pass with `-initrd` (stock images).
    pub fn initrd(&self) -> Option<PathBuf> {
        self.manifest.initrd.as_ref().map(|k| self.dir.join(k))
    }
    /// The base disk; VMs get a qcow2 overlay on it and never write it.
    pub fn disk(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }
    pub fn disk_format(&self) -> &str {
        &self.manifest.disk_format
    }
    /// The `-append` line (stock images).
    pub fn kernel_cmdline(&self) -> Option<&str> {
        self.manifest.kernel_cmdline.as_deref()
    }
    pub fn has_agent(&self) -> bool {
        self.manifest.has_agent
    }
    /// Total bytes of the image's files.
    pub fn size(&self) -> u64 {
        self.manifest.files.iter().map(|f| f.size).sum()
    }

    /// Recomputes every file's checksum; the first mismatch is an error
    /// naming the file.
    pub fn verify(&self) -> Result<(), ImageError> {
        for f in &self.manifest.files {
            let path = self.dir.join(&f.name);
            let (size, sum) = hash_file(&path)?;
            if size != f.size || sum != f.blake3 {
                return Err(ImageError::BadFile {
                    path,
                    why: format!(
                        "checksum mismatch: the manifest says {} bytes with BLAKE3 {}, the file has {size} bytes with BLAKE3 {sum}",
                        f.size, f.blake3
                    ),
                });
            }
        }
        Ok(())
    }

    /// Cheap check that every file is present with its recorded size.
    pub fn files_present(&self) -> bool {
        self.manifest.files.iter().all(|f| {
            fs::metadata(self.dir.join(&f.name))
                .map(|m| m.len() == f.size)
                .unwrap_or(false)
        })
    }
}

/// One line of `vgrid image ls`: an image, or a directory that is not one.
#[derive(Debug)]
pub struct ListEntry {
    pub name: String,
    pub image: Result<Image, String>,
}

/// The images under one data directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    data_dir: PathBuf,
}

impl ImageStore {
    /// The store of `data_dir` (`$VGRID_DATA_DIR`); created on first use.
    pub fn open(data_dir: &Path) -> Result<Self, ImageError> {
        let store = ImageStore {
            data_dir: data_dir.to_path_buf(),
        };
        create_private_dir_all(&store.images_dir())?;
        Ok(store)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn images_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }

    /// The default download cache: `$VGRID_DATA_DIR/cache`.
    pub fn default_cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }

    pub(crate) fn image_dir(&self, name: &str) -> PathBuf {
        self.images_dir().join(name)
    }

    /// The image called `name`.
    pub fn get(&self, name: &str) -> Result<Image, ImageError> {
        validate_name(name)?;
        let dir = self.image_dir(name);
        let path = dir.join("manifest.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(name.to_string()));
            }
            Err(e) => return Err(ImageError::io(&path)(e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::BadFile {
                path: path.clone(),
                why: format!("line {}, column {}: {e}", e.line(), e.column()),
            })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ImageError::BadFile {
                path,
                why: format!(
                    "field `format`: version {} is not supported (this vgrid reads {MANIFEST_FORMAT})",
                    manifest.format
                ),
            });
        }
        if manifest.name != name {
            return Err(ImageError::BadFile {
                path,
                why: format!(
                    "field `name`: says {:?}, the directory is {name:?}",
                    manifest.name
                ),
            });
        }
        for f in &manifest.files {
            if validate_name(&f.name).is_err() {
                return Err(ImageError::BadFile {
                    path,
                    why: format!("field `files`: bad file name {:?}", f.name),
                });
            }
        }
        Ok(Image { dir, manifest })
    }

    /// Every image, sorted by name; directories without a valid manifest
    /// are listed with the reason.
    pub fn list(&self) -> Result<Vec<ListEntry>, ImageError> {
        let dir = self.images_dir();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(ImageError::io(&dir))?
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| {
                let image = self.get(&name).map_err(|e| e.to_string());
                ListEntry { name, image }
            })
            .collect())
    }

    /// The VMs (directories under `$VGRID_DATA_DIR/vms`) whose `vm.json`
    /// names this image.
    pub fn users_of(&self, name: &str) -> Vec<(String, PathBuf)> {
        let vms = self.data_dir.join("vms");
        let Ok(entries) = fs::read_dir(&vms) else {
            return Vec::new();
        };
        let mut users = Vec::new();
        for entry in entries.flatten() {
            let json = entry.path().join("vm.json");
            let Ok(bytes) = fs::read(&json) else {
                continue;
            };
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            if mentions_image(&value, name, &self.image_dir(name), 0) {
                users.push((entry.file_name().to_string_lossy().into_owned(), json));
            }
        }
        users.sort();
        users
    }

    /// Removes an image, refusing while a VM uses it.
    pub fn remove(&self, name: &str) -> Result<(), ImageError> {
        validate_name(name)?;
        let _lock = self.lock(name)?;
        let dir = self.image_dir(name);
        if !dir.is_dir() {
            return Err(ImageError::NotFound(name.to_string()));
        }
        if let Some((vm, vm_json)) = self.users_of(name).into_iter().next() {
            return Err(ImageError::InUse {
                name: name.to_string(),
                vm,
                vm_json,
            });
        }
        // Rename first so a half-removed directory is never seen as an image.
        let doomed = self
            .images_dir()
            .join(format!(".removing-{name}-{}", std::process::id()));
        fs::rename(&dir, &doomed).map_err(ImageError::io(&dir))?;
        fs::remove_dir_all(&doomed).map_err(ImageError::io(&doomed))
    }

    /// Imports a user's disk (qcow2 or raw) as image `name`. The disk is
    /// converted to a standalone qcow2 file; its guest boots through
    /// firmware. `has_agent` records that the disk's OS runs the vgrid
    /// guest agent.
    pub fn import(
        &self,
        name: &str,
        file: &Path,
        has_agent: bool,
        progress: &dyn Fn(&str),
    ) -> Result<Image, ImageError> {
        validate_name(name)?;
        let meta = fs::metadata(file).map_err(ImageError::io(file))?;
        if !meta.is_file() {
            return Err(ImageError::BadFile {
                path: file.to_path_buf(),
                why: "not a regular file".into(),
            });
        }
        let _lock = self.lock(name)?;
        if self.image_dir(name).exists() {
            return Err(ImageError::Exists(name.to_string()));
        }
        let info = disk_info(file)?;
        progress(&format!(
            "importing {} ({}, {} virtual)",
            file.display(),
            info.format,
            crate::deb::human(info.virtual_size)
        ));
        let work = self.work_dir(name)?;
        let result = (|| {
            let disk = work.join("disk.qcow2");
            let mut cmd = tools::command(QEMU_IMG)?;
            cmd.args(["convert", "-q", "-f", &info.format, "-O", "qcow2"])
                .arg(file)
                .arg(&disk);
            tools::run(cmd, None)?;
            progress("computing checksums");
            let (size, sum) = hash_file(&disk)?;
            let manifest = Manifest {
                format: MANIFEST_FORMAT,
                name: name.to_string(),
                kind: ImageKind::Imported,
                created_unix: now_unix(),
                inputs_hash: sum.clone(),
                inputs: None,
                disk_recipe_hash: None,
                files: vec![FileEntry {
                    name: "disk.qcow2".into(),
                    size,
                    blake3: sum,
                }],
                kernel: None,
                initrd: None,
                kernel_cmdline: None,
                kernel_version: None,
                disk: "disk.qcow2".into(),
                disk_format: "qcow2".into(),
                disk_virtual_size: info.virtual_size,
                has_agent,
                source: Some(file.display().to_string()),
            };
            write_manifest(&work, &manifest)?;
            make_private(&work)?;
            let dir = self.image_dir(name);
            fs::rename(&work, &dir).map_err(ImageError::io(&dir))?;
            Ok(Image { dir, manifest })
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&work);
        }
        result
    }

    /// A fresh hidden directory to build an image in.
    pub(crate) fn work_dir(&self, name: &str) -> Result<PathBuf, ImageError> {
        let dir = self
            .images_dir()
            .join(format!(".build-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        create_private_dir_all(&dir)?;
        Ok(dir)
    }

    /// An exclusive lock on image `name`, held until the guard is dropped.
    pub(crate) fn lock(&self, name: &str) -> Result<FileLock, ImageError> {
        FileLock::acquire(&self.images_dir().join(format!(".{name}.lock")))
    }
}

/// Whether a VM record names the image: an `image` field holding the name
/// (or an object whose `name` is it), or any path inside the image's
/// directory (an overlay's base disk, a kernel).
fn mentions_image(value: &serde_json::Value, name: &str, image_dir: &Path, depth: usize) -> bool {
    if depth > 6 {
        return false;
    }
    match value {
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| {
            let named = k == "image"
                && (v.as_str() == Some(name)
                    || v.get("name").and_then(|n| n.as_str()) == Some(name));
            named || mentions_image(v, name, image_dir, depth + 1)
        }),
        serde_json::Value::Array(items) => items
            .iter()
            .any(|v| mentions_image(v, name, image_dir, depth + 1)),
        serde_json::Value::String(s) => Path::new(s).starts_with(image_dir),
        _ => false,
    }
}

/// What `qemu-img info` says about a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    pub format: String,
    pub virtual_size: u64,
}

/// Inspects a disk with `qemu-img info --output=json`; only qcow2 (without
/// a backing file) and raw are accepted.
pub fn disk_info(file: &Path) -> Result<DiskInfo, ImageError> {
    let mut cmd = tools::command(QEMU_IMG)?;
    cmd.args(["info", "--output=json"]).arg(file);
    let out = tools::run(cmd, None)?;
    parse_disk_info(file, &out.stdout)
}

pub(crate) fn parse_disk_info(file: &Path, json: &[u8]) -> Result<DiskInfo, ImageError> {
    let bad = |why: String| ImageError::BadFile {
        path: file.to_path_buf(),
        why,
    };
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| bad(format!("qemu-img info printed invalid JSON: {e}")))?;
    let format = v
        .get("format")
        .and_then(|f| f.as_str())
        .ok_or_else(|| bad("qemu-img info shows no format".into()))?
        .to_string();
    if format != "qcow2" && format != "raw" {
        return Err(ImageError::UnsupportedFormat {
            file: file.to_path_buf(),
            format,
        });
    }
    if let Some(backing) = v
        .get("full-backing-filename")
        .or_else(|| v.get("backing-filename"))
        .and_then(|b| b.as_str())
    {
        return Err(ImageError::HasBackingFile {
            file: file.to_path_buf(),
            backing: backing.to_string(),
        });
    }
    let virtual_size = v
        .get("virtual-size")
        .and_then(|s| s.as_u64())
        .ok_or_else(|| bad("qemu-img info shows no virtual size".into()))?;
    Ok(DiskInfo {
        format,
        virtual_size,
    })
}

/// Size and BLAKE3 (hex) of a file.
pub fn hash_file(path: &Path) -> Result<(u64, String), ImageError> {
    let mut file = File::open(path).map_err(ImageError::io(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(ImageError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize().to_hex().to_string()))
}

/// Writes `manifest.json` atomically: temp file, fsync, rename, fsync dir.
pub(crate) fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), ImageError> {
    let tmp = dir.join(".manifest.json.tmp");
    let path = dir.join("manifest.json");
    let mut bytes = serde_json::to_vec_pretty(manifest).map_err(|e| ImageError::BadFile {
        path: path.clone(),
        why: e.to_string(),
    })?;
    bytes.push(b'\n');
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(ImageError::io(&tmp))?;
    f.write_all(&bytes).map_err(ImageError::io(&tmp))?;
    f.sync_all().map_err(ImageError::io(&tmp))?;
    fs::rename(&tmp, &path).map_err(ImageError::io(&path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `dir` and any missing parent 0700; existing directories keep
/// their modes (the data directory may be the user's).
pub(crate) fn create_private_dir_all(dir: &Path) -> Result<(), ImageError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(ImageError::io(dir))
}

/// Makes an image directory vgrid's own: the directory 0700, its files
/// 0600 (tools such as `qemu-img` create theirs 0644).
pub(crate) fn make_private(dir: &Path) -> Result<(), ImageError> {
    for entry in fs::read_dir(dir).map_err(ImageError::io(dir))? {
        let entry = entry.map_err(ImageError::io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(ImageError::io(&path))?.is_file() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(ImageError::io(&path))?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(ImageError::io(dir))
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An exclusive `flock` on a file; released on drop (or when the process
/// dies, so a crashed build never leaves a stale lock).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn acquire(path: &Path) -> Result<Self, ImageError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(ImageError::io(parent))?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(ImageError::io(path))?;
        loop {
            // SAFETY: flock on a valid open descriptor.
            let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if ret == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(ImageError::io(path)(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn fake_image(store: &ImageStore, name: &str) -> Image {
        let dir = store.image_dir(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("disk.qcow2"), b"not really qcow2").unwrap();
        let (size, blake3) = hash_file(&dir.join("disk.qcow2")).unwrap();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            name: name.into(),
            kind: ImageKind::Imported,
            created_unix: 1,
            inputs_hash: blake3.clone(),
            inputs: None,
            disk_recipe_hash: None,
            files: vec![FileEntry {
                name: "disk.qcow2".into(),
                size,
                blake3,
            }],
            kernel: None,
            initrd: None,
            kernel_cmdline: None,
            kernel_version: None,
            disk: "disk.qcow2".into(),
            disk_format: "qcow2".into(),
            disk_virtual_size: 1 << 20,
            has_agent: false,
            source: None,
        };
        write_manifest(&dir, &manifest).unwrap();
        store.get(name).unwrap()
    }

    #[test]
    fn images_are_listed_and_verified() {
        let (_d, store) = temp_store();
        let img = fake_image(&store, "alpha");
        fs::create_dir_all(store.image_dir("broken")).unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "alpha");
        assert!(list[0].image.is_ok());
        assert!(
            list[1]
                .image
                .as_ref()
                .unwrap_err()
                .contains("no image named")
        );
        img.verify().unwrap();
        fs::write(img.disk(), b"tampered").unwrap();
        let err = img.verify().unwrap_err().to_string();
        assert!(
            err.contains("disk.qcow2") && err.contains("checksum mismatch"),
            "{err}"
        );
    }

    #[test]
    fn the_store_and_its_images_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = ImageStore::open(&data).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&store.images_dir()), 0o700);
        let work = store.work_dir("x").unwrap();
        assert_eq!(mode(&work), 0o700);
        fs::write(work.join("disk.qcow2"), b"made 0644 by a tool").unwrap();
        fs::set_permissions(work.join("disk.qcow2"), fs::Permissions::from_mode(0o644)).unwrap();
        make_private(&work).unwrap();
        assert_eq!(mode(&work.join("disk.qcow2")), 0o600);
        let img = fake_image(&store, "y");
        write_manifest(&img.dir, &img.manifest).unwrap();
        assert_eq!(mode(&img.dir.join("manifest.json")), 0o600);
    }

    #[test]
    fn a_corrupt_manifest_names_the_file_and_position() {
        let (_d, store) = temp_store();
        fake_image(&store, "beta");
        let path = store.image_dir("beta").join("manifest.json");
        fs::write(&path, b"{\n \"format\": 1,\n \"name\": 3\n}").unwrap();
        let err = store.get("beta").unwrap_err().to_string();
        assert!(
            err.contains("manifest.json") && err.contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn removal_is_refused_while_a_vm_uses_the_image() {
        let (_d, store) = temp_store();
        fake_image(&store, "gamma");
        let vm = store.data_dir().join("vms/web1");
        fs::create_dir_all(&vm).unwrap();
        // The image named by a field, by an object's name, or through a
        // path inside its directory.
        let disk = store.image_dir("gamma").join("disk.qcow2");
        let records = [
            r#"{"spec":{"image":"gamma","cpus":1}}"#.to_string(),
            r#"{"image":{"name":"gamma","kind":"stock"}}"#.to_string(),
            serde_json::json!({"disks": [disk]}).to_string(),
        ];
        for record in &records {
            fs::write(vm.join("vm.json"), record).unwrap();
            let err = store.remove("gamma").unwrap_err();
            assert!(
                matches!(err, ImageError::InUse { ref vm, .. } if vm == "web1"),
                "{record}: {err}"
            );
        }
        fs::write(vm.join("vm.json"), r#"{"image":{"name":"gammaray"}}"#).unwrap();
        assert!(store.users_of("gamma").is_empty());
        fs::remove_dir_all(&vm).unwrap();
        store.remove("gamma").unwrap();
        assert!(matches!(store.get("gamma"), Err(ImageError::NotFound(_))));
        assert!(matches!(
            store.remove("gamma"),
            Err(ImageError::NotFound(_))
        ));
    }

    #[test]
    fn bad_names_are_refused_everywhere() {
        let (_d, store) = temp_store();
        assert!(matches!(
            store.get("../etc"),
            Err(ImageError::BadName { .. })
        ));
        assert!(matches!(
            store.remove("a/b"),
            Err(ImageError::BadName { .. })
        ));
        assert!(matches!(
            store.import("Bad", Path::new("/dev/null"), false, &|_| {}),
            Err(ImageError::BadName { .. })
        ));
    }

    #[test]
    fn disk_info_accepts_qcow2_and_raw_only() {
        let f = Path::new("x.img");
        let raw = br#"{"format":"raw","virtual-size":1048576}"#;
        assert_eq!(
            parse_disk_info(f, raw).unwrap(),
            DiskInfo {
                format: "raw".into(),
                virtual_size: 1048576
            }
        );
        let vmdk = br#"{"format":"vmdk","virtual-size":1}"#;
        assert!(matches!(
            parse_disk_info(f, vmdk),
            Err(ImageError::UnsupportedFormat { .. })
        ));
        let backed = br#"{"format":"qcow2","virtual-size":1,"backing-filename":"/etc/shadow"}"#;
        assert!(matches!(
            parse_disk_info(f, backed),
            Err(ImageError::HasBackingFile { .. })
        ));
        assert!(parse_disk_info(f, b"garbage").is_err());
    }
}
