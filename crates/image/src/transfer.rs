//! Images in the content-addressed store: published from the host that
//! built them, installed on a node that lacks them.
//!
//! A published image is a store manifest of kind `image` listing the
//! image's files and its own `manifest.json`; its meta holds the name and
//! the build (`inputs_hash`). A node installs it by writing the files into
//! a hidden directory, checking them against the image's manifest, and
//! renaming the directory into place: a half-installed image is never
//! seen.

use std::fs;

use vgrid_cas::{Manifest as CasManifest, ManifestKind, Store};

use crate::error::ImageError;
use crate::name::validate_name;
use crate::store::{Image, ImageStore, MANIFEST_FORMAT, Manifest};

/// The meta keys of a published image.
pub const META_NAME: &str = "name";
pub const META_BUILD: &str = "inputs_hash";

fn cas_error(e: vgrid_cas::CasError) -> ImageError {
    ImageError::Store(e.to_string())
}

impl ImageStore {
    /// Puts image `name` into `cas` (its chunks and a manifest) and returns
    /// the manifest; the caller names it (`images/<name>`).
    pub fn publish(&self, name: &str, cas: &Store) -> Result<CasManifest, ImageError> {
        let image = self.get(name)?;
        let mut m = CasManifest::new(ManifestKind::Image);
        m.meta.insert(META_NAME.into(), name.to_string());
        m.meta
            .insert(META_BUILD.into(), image.manifest.inputs_hash.clone());
        for f in &image.manifest.files {
            let path = image.dir.join(&f.name);
            m.files
                .push(cas.import_file(&path, &f.name, 0o600).map_err(cas_error)?);
        }
        let own = image.dir.join("manifest.json");
        m.files.push(
            cas.import_file(&own, "manifest.json", 0o600)
                .map_err(cas_error)?,
        );
        cas.put_manifest(&m).map_err(cas_error)?;
        Ok(m)
    }

    /// Whether the image `m` describes is here already, of the same build.
    pub fn holds(&self, m: &CasManifest) -> bool {
        let (Some(name), Some(build)) = (m.meta.get(META_NAME), m.meta.get(META_BUILD)) else {
            return false;
        };
        self.get(name)
            .is_ok_and(|i| &i.manifest.inputs_hash == build && i.files_present())
    }

    /// Installs the image `m` describes from `cas`, where all its chunks
    /// must be. An image of that name and build already here is kept; one
    /// of another build is replaced unless a VM uses it.
    pub fn install_published(&self, m: &CasManifest, cas: &Store) -> Result<Image, ImageError> {
        let name = m
            .meta
            .get(META_NAME)
            .ok_or_else(|| ImageError::Store("the published image has no name".into()))?
            .clone();
        validate_name(&name)?;
        if self.holds(m) {
            return self.get(&name);
        }
        let _lock = self.lock(&name)?;
        let work = self.work_dir(&name)?;
        let result = (|| {
            cas.export(m, &work).map_err(cas_error)?;
            // The image's own manifest and checksums, checked as any image
            // of this store is.
            let bytes = fs::read(work.join("manifest.json")).map_err(ImageError::io(&work))?;
            let own: Manifest =
                serde_json::from_slice(&bytes).map_err(|e| ImageError::BadFile {
                    path: work.join("manifest.json"),
                    why: e.to_string(),
                })?;
            if own.format != MANIFEST_FORMAT || own.name != name {
                return Err(ImageError::BadFile {
                    path: work.join("manifest.json"),
                    why: format!("it is not the manifest of image `{name}`"),
                });
            }
            Image {
                dir: work.clone(),
                manifest: own,
            }
            .verify()?;
            let dir = self.image_dir(&name);
            if dir.exists() {
                if let Some((vm, vm_json)) = self.users_of(&name).into_iter().next() {
                    return Err(ImageError::InUse { name, vm, vm_json });
                }
                let old = self
                    .images_dir()
                    .join(format!(".replaced-{name}-{}", std::process::id()));
                fs::rename(&dir, &old).map_err(ImageError::io(&dir))?;
                let _ = fs::remove_dir_all(&old);
            }
            fs::rename(&work, &dir).map_err(ImageError::io(&dir))?;
            self.get(&name)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&work);
        }
        result
    }
}
