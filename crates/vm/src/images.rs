//! Where the runtime gets the images it boots.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::BootImageError;
use crate::record::BootImage;

/// A source of bootable images (the node's image store, or a fixed set).
pub trait ImageSource: Send + Sync {
    /// The image called `name`, ready to boot.
    fn boot_image(&self, name: &str) -> Result<BootImage, BootImageError>;
    /// A guest kernel on this node, used to check that KVM can boot Linux.
    fn probe_kernel(&self) -> Option<PathBuf>;

    /// The virtual size of the image's base disk when the source knows it
    /// (saves running `qemu-img info` at every start).
    fn disk_bytes(&self, _name: &str) -> Option<u64> {
        None
    }
}

/// A fixed set of images, for embedding and tests.
#[derive(Debug, Default, Clone)]
pub struct FixedImages {
    images: BTreeMap<String, BootImage>,
}

impl FixedImages {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, image: BootImage) -> Self {
        self.images.insert(image.name.clone(), image);
        self
    }
}

impl ImageSource for FixedImages {
    fn boot_image(&self, name: &str) -> Result<BootImage, BootImageError> {
        self.images
            .get(name)
            .cloned()
            .ok_or_else(|| BootImageError::NotFound {
                name: name.to_string(),
            })
    }

    fn probe_kernel(&self) -> Option<PathBuf> {
        self.images.values().find_map(|i| i.kernel.clone())
    }
}

/// The node's image store (`$VGRID_DATA_DIR/images`).
#[derive(Debug, Clone)]
pub struct StoreImages {
    store: vgrid_image::ImageStore,
}

impl StoreImages {
    pub fn open(data_dir: &std::path::Path) -> Result<Self, BootImageError> {
        let store = vgrid_image::ImageStore::open(data_dir).map_err(BootImageError::OpenStore)?;
        Ok(StoreImages { store })
    }
}

/// The runtime's view of an image from the store. Its identity for
/// checkpoints is the BLAKE3 of its base disk: a restore needs exactly the
/// disk the VM's layers were written on.
pub fn boot_image_of(image: &vgrid_image::Image) -> Result<BootImage, BootImageError> {
    let m = &image.manifest;
    let name = m.name.clone();
    let checksum = m
        .files
        .iter()
        .find(|f| f.name == m.disk)
        .map(|f| f.blake3.clone())
        .ok_or_else(|| BootImageError::NoChecksum {
            name: name.clone(),
            disk: m.disk.clone(),
        })?;
    let kind = image.kind();
    Ok(BootImage {
        name,
        kind,
        kernel: image.kernel(),
        initrd: image.initrd(),
        append: image.kernel_cmdline().unwrap_or_default().to_string(),
        disk: image.disk(),
        disk_format: image.disk_format().to_string(),
        agent: image.has_agent(),
        checksum,
    })
}

impl ImageSource for StoreImages {
    fn boot_image(&self, name: &str) -> Result<BootImage, BootImageError> {
        let image = self
            .store
            .get(name)
            .map_err(|source| BootImageError::Store {
                name: name.to_string(),
                source,
            })?;
        if !image.files_present() {
            return Err(BootImageError::FilesMissing {
                name: name.to_string(),
            });
        }
        boot_image_of(&image)
    }

    fn disk_bytes(&self, name: &str) -> Option<u64> {
        let image = self.store.get(name).ok()?;
        Some(image.manifest.disk_virtual_size).filter(|b| *b > 0)
    }

    fn probe_kernel(&self) -> Option<PathBuf> {
        let list = self.store.list().ok()?;
        list.into_iter()
            .filter_map(|e| e.image.ok())
            .find_map(|i| i.kernel())
    }
}
