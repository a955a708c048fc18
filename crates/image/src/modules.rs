//! Kernel modules: which ones the stock guest needs, and in what order to
//! load them.
//!
//! Debian's kernel package ships no `modules.dep` (depmod writes it at
//! install time), so dependencies are read from each module's own
//! `.modinfo` ELF section (`depends=`, `softdep=pre: ...`, `alias=`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The modules the stock guest loads at boot (their dependencies come
/// along). Order matters only for modules without a dependency between them.
pub const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "qemu_fw_cfg",
    "crc32c_generic",
    "ext4",
];

/// The modules the agent loads only before its first virtio-9p mount
/// (loading them costs about half a second of a TCG boot).
pub const NINEP_MODULES: &[&str] = &["9pnet_virtio", "9p"];

/// Module names treat `-` and `_` alike; the kernel uses `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModuleError {
    #[error("{path}: not a 64-bit little-endian ELF kernel module ({why})")]
    NotElf { path: String, why: String },
    #[error("{path}: cannot read: {why}")]
    Io { path: String, why: String },
    #[error("kernel module `{name}` is not in the kernel package (needed by {needed_by})")]
    Missing { name: String, needed_by: String },
    #[error("kernel modules depend on each other in a cycle through `{0}`")]
    Cycle(String),
}

/// What the loader needs to know about one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Normalised name.
    pub name: String,
    /// Path relative to the modules directory (`kernel/fs/ext4/ext4.ko`).
    pub path: PathBuf,
    pub depends: Vec<String>,
    /// `softdep=pre:` entries: names or aliases loaded first when present.
    pub soft_pre: Vec<String>,
    pub aliases: Vec<String>,
}

/// Every module of one kernel, by name.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    modules: BTreeMap<String, ModuleInfo>,
    builtin: BTreeSet<String>,
}

impl ModuleIndex {
    /// Reads `DIR/modules.builtin` and the `.modinfo` of every `.ko` under
    /// `DIR/kernel`, where DIR is `lib/modules/VERSION`.
    pub fn scan(dir: &Path) -> Result<Self, ModuleError> {
        let mut index = ModuleIndex::default();
        if let Ok(text) = std::fs::read_to_string(dir.join("modules.builtin")) {
            for line in text.lines() {
                if let Some(name) = module_name_of(Path::new(line.trim())) {
                    index.builtin.insert(name);
                }
            }
        }
        let mut files = Vec::new();
        walk(&dir.join("kernel"), &mut files).map_err(|e| ModuleError::Io {
            path: dir.join("kernel").display().to_string(),
            why: e.to_string(),
        })?;
        for file in files {
            let Some(name) = module_name_of(&file) else {
                continue;
            };
            let fields = read_modinfo(&file)?;
            let rel = file.strip_prefix(dir).unwrap_or(&file).to_path_buf();
            index.insert(module_from_fields(name, rel, &fields));
        }
        Ok(index)
    }

    pub fn insert(&mut self, info: ModuleInfo) {
        self.modules.insert(info.name.clone(), info);
    }

    pub fn mark_builtin(&mut self, name: &str) {
        self.builtin.insert(normalize(name));
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The modules to load for `roots`, dependencies first, each once.
    /// Built-in modules are skipped; a soft dependency that matches no
    /// module is ignored.
    pub fn resolve(&self, roots: &[&str]) -> Result<Vec<&ModuleInfo>, ModuleError> {
        self.resolve_after(roots, &[])
    }

    /// Like [`ModuleIndex::resolve`], leaving out what `loaded` (an earlier
    /// result) already loads.
    pub fn resolve_after(
        &self,
        roots: &[&str],
        loaded: &[&ModuleInfo],
    ) -> Result<Vec<&ModuleInfo>, ModuleError> {
        let mut order = Vec::new();
        let mut done: BTreeSet<String> = loaded.iter().map(|m| m.name.clone()).collect();
        let mut visiting = BTreeSet::new();
        for root in roots {
            self.visit(
                &normalize(root),
                "the stock image",
                &mut order,
                &mut done,
                &mut visiting,
            )?;
        }
        Ok(order)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        needed_by: &str,
        order: &mut Vec<&'a ModuleInfo>,
        done: &mut BTreeSet<String>,
        visiting: &mut BTreeSet<String>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if !visiting.insert(name.to_string()) {
            return Err(ModuleError::Cycle(name.to_string()));
        }
        let info = self.modules.get(name).ok_or_else(|| ModuleError::Missing {
            name: name.to_string(),
            needed_by: needed_by.to_string(),
        })?;
        for soft in &info.soft_pre {
            if let Some(provider) = self.provider_of(soft) {
                let provider = provider.to_string();
                self.visit(&provider, name, order, done, visiting)?;
            }
        }
        for dep in &info.depends {
            self.visit(&normalize(dep), name, order, done, visiting)?;
        }
        visiting.remove(name);
        done.insert(name.to_string());
        order.push(info);
        Ok(())
    }

    /// The module named `want`, or one with that alias (a `_generic`
    /// implementation preferred: it runs on every CPU model).
    fn provider_of(&self, want: &str) -> Option<&str> {
        let norm = normalize(want);
        if let Some(m) = self.modules.get(&norm) {
            return Some(&m.name);
        }
        if self.builtin.contains(&norm) {
            return None;
        }
        let mut providers: Vec<&str> = self
            .modules
            .values()
            .filter(|m| m.aliases.iter().any(|a| a == want))
            .map(|m| m.name.as_str())
            .collect();
        providers.sort_by_key(|n| (!n.ends_with("_generic"), n.to_string()));
        providers.first().copied()
    }
}

fn module_from_fields(name: String, path: PathBuf, fields: &[(String, String)]) -> ModuleInfo {
    let mut info = ModuleInfo {
        name,
        path,
        depends: Vec::new(),
        soft_pre: Vec::new(),
        aliases: Vec::new(),
    };
    for (key, value) in fields {
        match key.as_str() {
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(normalize),
            ),
            "softdep" => info.soft_pre.extend(parse_softdep_pre(value)),
            "alias" => info.aliases.push(value.clone()),
            _ => {}
        }
    }
    info
}

/// `pre: a b post: c` -> `[a, b]`.
fn parse_softdep_pre(value: &str) -> Vec<String> {
    let mut pre = Vec::new();
    let mut in_pre = false;
    for word in value.split_whitespace() {
        match word {
            "pre:" => in_pre = true,
            "post:" => in_pre = false,
            w if in_pre => pre.push(w.to_string()),
            _ => {}
        }
    }
    pre
}

fn module_name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    file.strip_suffix(".ko").map(normalize)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// The `key=value` strings of a module's `.modinfo` section, read without
/// loading the whole file.
pub fn read_modinfo(path: &Path) -> Result<Vec<(String, String)>, ModuleError> {
    let io_err = |e: std::io::Error| ModuleError::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    };
    let not_elf = |why: &str| ModuleError::NotElf {
        path: path.display().to_string(),
        why: why.to_string(),
    };
    let mut file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut read_at = |offset: u64, size: u64| -> Result<Vec<u8>, ModuleError> {
        if offset.checked_add(size).is_none_or(|end| end > len) || size > 64 << 20 {
            return Err(not_elf("a section lies outside the file"));
        }
        let mut buf = vec![0u8; size as usize];
        file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        file.read_exact(&mut buf).map_err(io_err)?;
        Ok(buf)
    };
    let header = read_at(0, 64)?;
    let sections = section_table(&header, read_at).map_err(|w| not_elf(&w))?;
    let modinfo = sections.ok_or_else(|| not_elf("no .modinfo section"))?;
    Ok(parse_modinfo(&modinfo))
}

/// Finds the `.modinfo` section of an ELF64 LE file, given its header and a
/// reader of byte ranges.
fn section_table(
    header: &[u8],
    mut read_at: impl FnMut(u64, u64) -> Result<Vec<u8>, ModuleError>,
) -> Result<Option<Vec<u8>>, String> {
    if header.len() < 64 || &header[..4] != b"\x7fELF" {
        return Err("bad magic".into());
    }
    if header[4] != 2 || header[5] != 1 {
        return Err("not ELF64 little-endian".into());
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u32_at =
        |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as u64;
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let shoff = u64_at(header, 0x28);
    let shentsize = u16_at(header, 0x3a);
    let shnum = u16_at(header, 0x3c);
    let shstrndx = u16_at(header, 0x3e);
    if shentsize < 64 || shstrndx >= shnum {
        return Err("bad section header table".into());
    }
    let table = read_at(shoff, shentsize * shnum).map_err(|e| e.to_string())?;
    let section = |i: u64| {
        let base = (i * shentsize) as usize;
        (
            u32_at(&table, base),
            u64_at(&table, base + 0x18),
            u64_at(&table, base + 0x20),
        )
    };
    let (_, str_off, str_size) = section(shstrndx);
    let names = read_at(str_off, str_size).map_err(|e| e.to_string())?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i);
        let name = names
            .get(name_off as usize..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .unwrap_or(&[]);
        if name == b".modinfo" {
            return read_at(off, size).map(Some).map_err(|e| e.to_string());
        }
    }
    Ok(None)
}

fn parse_modinfo(section: &[u8]) -> Vec<(String, String)> {
    section
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .filter_map(|s| s.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, depends: &[&str], soft: &[&str], aliases: &[&str]) -> ModuleInfo {
        ModuleInfo {
            name: name.into(),
            path: PathBuf::from(format!("kernel/{name}.ko")),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            soft_pre: soft.iter().map(|s| s.to_string()).collect(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(list: &[&ModuleInfo]) -> Vec<String> {
        list.iter().map(|m| m.name.clone()).collect()
    }

    fn sample() -> ModuleIndex {
        let mut idx = ModuleIndex::default();
        idx.insert(module(
            "ext4",
            &["jbd2", "mbcache", "crc16"],
            &["crypto-crc32c"],
            &[],
        ));
        idx.insert(module("jbd2", &[], &[], &[]));
        idx.insert(module("mbcache", &[], &[], &[]));
        idx.insert(module("crc16", &[], &[], &[]));
        idx.insert(module("crc32c_intel", &[], &[], &["crypto-crc32c"]));
        idx.insert(module("crc32c_generic", &[], &[], &["crypto-crc32c"]));
        idx.insert(module("9p", &["9pnet", "fscache", "netfs"], &[], &[]));
        idx.insert(module("9pnet", &[], &[], &[]));
        idx.insert(module("fscache", &["netfs"], &[], &[]));
        idx.insert(module("netfs", &[], &[], &[]));
        idx.insert(module(
            "virtio_net",
            &["virtio_ring", "virtio", "net_failover"],
            &[],
            &[],
        ));
        idx.insert(module("virtio_ring", &[], &[], &[]));
        idx.insert(module("virtio", &[], &[], &[]));
        idx.insert(module("net_failover", &["failover"], &[], &[]));
        idx.insert(module("failover", &[], &[], &[]));
        idx.mark_builtin("af_packet");
        idx
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let idx = sample();
        let order = names(
            &idx.resolve(&["9p", "ext4", "virtio_net", "af_packet"])
                .unwrap(),
        );
        let pos = |n: &str| order.iter().position(|x| x == n).unwrap();
        assert_eq!(order.len(), 14, "{order:?}");
        assert!(pos("netfs") < pos("fscache") && pos("fscache") < pos("9p"));
        assert!(pos("jbd2") < pos("ext4") && pos("crc16") < pos("ext4"));
        assert!(pos("failover") < pos("net_failover") && pos("net_failover") < pos("virtio_net"));
        // The soft dependency resolves to the portable implementation.
        assert!(pos("crc32c_generic") < pos("ext4"));
        assert!(!order.contains(&"crc32c_intel".to_string()));
        assert!(
            !order.contains(&"af_packet".to_string()),
            "built-in modules are not loaded"
        );
    }

    #[test]
    fn a_later_group_leaves_out_what_is_already_loaded() {
        let idx = sample();
        let first = idx.resolve(&["fscache"]).unwrap();
        let second = names(&idx.resolve_after(&["9p"], &first).unwrap());
        assert_eq!(second, ["9pnet", "9p"]);
    }

    #[test]
    fn a_missing_module_names_who_needs_it() {
        let mut idx = sample();
        idx.insert(module("needy", &["ghost"], &[], &[]));
        assert_eq!(
            idx.resolve(&["needy"]).unwrap_err(),
            ModuleError::Missing {
                name: "ghost".into(),
                needed_by: "needy".into()
            }
        );
    }

    #[test]
    fn cycles_are_reported() {
        let mut idx = ModuleIndex::default();
        idx.insert(module("a", &["b"], &[], &[]));
        idx.insert(module("b", &["a"], &[], &[]));
        assert!(matches!(idx.resolve(&["a"]), Err(ModuleError::Cycle(_))));
    }

    #[test]
    fn dashes_and_underscores_are_the_same_name() {
        assert_eq!(normalize("crc32c-intel"), "crc32c_intel");
        assert_eq!(
            module_name_of(Path::new("kernel/arch/x86/crypto/crc32c-intel.ko")).as_deref(),
            Some("crc32c_intel")
        );
        assert_eq!(module_name_of(Path::new("kernel/x.ko.xz")), None);
    }

    #[test]
    fn softdep_lines_are_parsed() {
        assert_eq!(parse_softdep_pre("pre: crypto-crc32c"), ["crypto-crc32c"]);
        assert_eq!(parse_softdep_pre("pre: a b post: c"), ["a", "b"]);
        assert!(parse_softdep_pre("post: c").is_empty());
    }

    /// Builds a tiny ELF64 file with a `.modinfo` section.
    fn fake_module(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let strtab_off = elf.len() as u64;
        elf.extend_from_slice(shstrtab);
        let modinfo_off = elf.len() as u64;
        elf.extend_from_slice(modinfo);
        let shoff = elf.len() as u64;
        let mut sh = |name: u32, off: u64, size: u64| {
            let mut s = vec![0u8; 64];
            s[..4].copy_from_slice(&name.to_le_bytes());
            s[0x18..0x20].copy_from_slice(&off.to_le_bytes());
            s[0x20..0x28].copy_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&s);
        };
        sh(0, 0, 0);
        sh(1, strtab_off, shstrtab.len() as u64);
        sh(11, modinfo_off, modinfo.len() as u64);
        elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn modinfo_is_read_from_the_elf_section() {
        let dir = std::env::temp_dir().join(format!("vgrid-modinfo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ext4.ko");
        std::fs::write(
            &path,
            fake_module(
                b"license=GPL\0depends=jbd2,mbcache\0softdep=pre: crypto-crc32c\0alias=fs-ext4\0",
            ),
        )
        .unwrap();
        let fields = read_modinfo(&path).unwrap();
        let info = module_from_fields("ext4".into(), path.clone(), &fields);
        assert_eq!(info.depends, ["jbd2", "mbcache"]);
        assert_eq!(info.soft_pre, ["crypto-crc32c"]);
        assert_eq!(info.aliases, ["fs-ext4"]);

        std::fs::write(
            &path,
            b"not an elf file at all, but long enough to have a header......",
        )
        .unwrap();
        assert!(matches!(
            read_modinfo(&path),
            Err(ModuleError::NotElf { .. })
        ));
        // A truncated module is an error, not a panic.
        let mut short = fake_module(b"depends=\0");
        short.truncate(70);
        std::fs::write(&path, short).unwrap();
        assert!(read_modinfo(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
