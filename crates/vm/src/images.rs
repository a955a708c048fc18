//! Where the runtime gets the images it boots.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Result, VmError};
use crate::record::BootImage;

/// A source of bootable images (the node's image store, or a fixed set).
pub trait ImageSource: Send + Sync {
    /// The image called `name`, ready to boot.
    fn boot_image(&self, name: &str) -> Result<BootImage>;
    /// A guest kernel on this node, used to check that KVM can boot Linux.
    fn probe_kernel(&self) -> Option<PathBuf>;
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
    fn boot_image(&self, name: &str) -> Result<BootImage> {
        self.images
            .get(name)
            .cloned()
            .ok_or_else(|| VmError::Image {
                name: name.to_string(),
                reason: "no such image".into(),
            })
    }

    fn probe_kernel(&self) -> Option<PathBuf> {
        self.images.values().find_map(|i| i.kernel.clone())
    }
}
