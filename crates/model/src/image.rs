//! How an image boots.

use serde::{Deserialize, Serialize};

/// The kind of a guest image, in image manifests and VM records alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// vgrid's stock guest, built by `vgrid image build`: a kernel and an
    /// initramfs with the guest agent, and a scratch disk.
    Stock,
    /// A user's disk, booted through firmware.
    Imported,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Stock => "stock",
            ImageKind::Imported => "imported",
        }
    }
}
