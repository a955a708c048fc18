//! Debian packages: look them up in the local apt lists, download them into
//! a cache, check them, unpack them.

use std::path::{Path, PathBuf};

use crate::error::ImageError;
use crate::tools::{self, APT_CACHE, APT_GET, DPKG_DEB};

/// One package version as the apt lists describe it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The file name in the archive's pool (no directories).
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
    /// The raw `Depends` field.
    #[serde(default)]
    pub depends: String,
}

/// Looks `name` up with `apt-cache show --no-all-versions` (the candidate
/// version from the local package lists).
pub fn lookup(name: &str) -> Result<Package, ImageError> {
    let mut cmd = tools::command(APT_CACHE)?;
    cmd.args(["show", "--no-all-versions", name]);
    let out = tools::run(cmd, None).map_err(|e| ImageError::Package {
        package: name.to_string(),
        why: format!("apt-cache does not know it ({e}); run `apt-get update` first"),
    })?;
    parse_stanza(name, &String::from_utf8_lossy(&out.stdout))
}

/// Parses the first stanza of `apt-cache show`.
pub fn parse_stanza(name: &str, text: &str) -> Result<Package, ImageError> {
    let mut fields = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with(' ') {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let get = |k: &str| {
        fields.get(k).cloned().ok_or_else(|| ImageError::Package {
            package: name.to_string(),
            why: format!("apt-cache shows no `{k}` field"),
        })
    };
    let filename = get("Filename")?;
    let file_name = filename.rsplit('/').next().unwrap_or_default().to_string();
    if file_name.is_empty() || !file_name.ends_with(".deb") || file_name.starts_with('.') {
        return Err(ImageError::Package {
            package: name.to_string(),
            why: format!("unexpected file name {filename:?}"),
        });
    }
    let size = get("Size")?.parse().map_err(|_| ImageError::Package {
        package: name.to_string(),
        why: "the `Size` field is not a number".into(),
    })?;
    Ok(Package {
        name: get("Package")?,
        version: get("Version")?,
        architecture: get("Architecture")?,
        file_name,
        size,
        sha256: get("SHA256")?.to_ascii_lowercase(),
        depends: fields.get("Depends").cloned().unwrap_or_default(),
    })
}

/// The first package name in a `Depends` field (`a (= 1) | b, c` -> `a`).
pub fn first_dependency(depends: &str) -> Option<String> {
    let first = depends.split(',').next()?.split('|').next()?.trim();
    let name = first.split_whitespace().next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Returns the cached `.deb` of `pkg`, downloading it with `apt-get
/// download` when it is missing or does not match its checksum.
pub fn fetch(pkg: &Package, cache: &Path, progress: &dyn Fn(&str)) -> Result<PathBuf, ImageError> {
    std::fs::create_dir_all(cache).map_err(ImageError::io(cache))?;
    let path = cache.join(&pkg.file_name);
    if path.is_file() {
        if sha256_of(&path)? == pkg.sha256 {
            progress(&format!(
                "using cached {} ({})",
                pkg.file_name,
                human(pkg.size)
            ));
            return Ok(path);
        }
        progress(&format!(
            "cached {} has a wrong checksum: downloading it again",
            pkg.file_name
        ));
    }
    progress(&format!(
        "downloading {} {} ({})",
        pkg.name,
        pkg.version,
        human(pkg.size)
    ));
    // Download into a fresh directory, then move the file into the cache,
    // so a parallel or interrupted download never leaves a partial file
    // under the final name.
    let tmp = cache.join(format!(".download-{}-{}", pkg.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(ImageError::io(&tmp))?;
    let result = (|| {
        let mut cmd = tools::command(APT_GET)?;
        cmd.args(["download", "-q"]);
        if is_root() {
            // As root, apt drops to the `_apt` user for downloads and warns
            // when that user cannot write here; download as root instead.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd.arg(format!("{}={}", pkg.name, pkg.version));
        tools::run(cmd, Some(&tmp))?;
        let downloaded = std::fs::read_dir(&tmp)
            .map_err(ImageError::io(&tmp))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| ImageError::Package {
                package: pkg.name.clone(),
                why: "apt-get download produced no .deb file".into(),
            })?;
        let sum = sha256_of(&downloaded)?;
        if sum != pkg.sha256 {
            return Err(ImageError::Package {
                package: pkg.name.clone(),
                why: format!(
                    "downloaded file has SHA256 {sum}, the archive says {}",
                    pkg.sha256
                ),
            });
        }
        std::fs::rename(&downloaded, &path).map_err(ImageError::io(&path))?;
        Ok(path.clone())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Unpacks a `.deb` into `dir` with `dpkg-deb -x`.
pub fn extract(deb: &Path, dir: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(dir).map_err(ImageError::io(dir))?;
    let mut cmd = tools::command(DPKG_DEB)?;
    cmd.arg("-x").arg(deb).arg(dir);
    tools::run(cmd, None)?;
    Ok(())
}

/// SHA-256 of a file with coreutils' `sha256sum` (the checksum apt lists).
fn sha256_of(path: &Path) -> Result<String, ImageError> {
    let mut cmd = std::process::Command::new("sha256sum");
    cmd.arg("--").arg(path);
    let out = tools::run(cmd, None)?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| ImageError::BadFile {
            path: path.to_path_buf(),
            why: "sha256sum printed nothing".into(),
        })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A size for people: `70.6 MB`.
pub fn human(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else if bytes >= 1_000 {
        format!("{:.1} kB", bytes as f64 / 1e3)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Installed-Size: 13
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Architecture: amd64
Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)
Description-en: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel.
Filename: pool/main/l/linux-signed-amd64/linux-image-amd64_6.1.192-3_amd64.deb
Size: 1508
SHA256: ABCDEF0123

Package: other
";

    #[test]
    fn apt_cache_show_is_parsed() {
        let p = parse_stanza("linux-image-amd64", SHOW).unwrap();
        assert_eq!(p.name, "linux-image-amd64");
        assert_eq!(p.version, "6.1.192-3");
        assert_eq!(p.file_name, "linux-image-amd64_6.1.192-3_amd64.deb");
        assert_eq!(p.size, 1508);
        assert_eq!(p.sha256, "abcdef0123");
        assert_eq!(
            first_dependency(&p.depends).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let err = parse_stanza("x", "Package: x\nVersion: 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`x`") && err.contains("Filename"), "{err}");
        let bad = SHOW.replace("Size: 1508", "Size: lots");
        assert!(
            parse_stanza("x", &bad)
                .unwrap_err()
                .to_string()
                .contains("Size")
        );
        let escape = SHOW.replace("linux-image-amd64_6.1.192-3_amd64.deb", "..");
        assert!(parse_stanza("x", &escape).is_err());
    }

    #[test]
    fn dependencies_take_the_first_alternative() {
        assert_eq!(first_dependency("a (>= 1) | b, c").as_deref(), Some("a"));
        assert_eq!(first_dependency("").as_deref(), None);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(70_591_024), "70.6 MB");
        assert_eq!(human(1508), "1.5 kB");
        assert_eq!(human(12), "12 B");
    }
}
