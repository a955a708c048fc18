//! The content-addressed store.
//!
//! Images, checkpoints and job data are stored as **chunks**: pieces cut by
//! FastCDC where the content says (an unchanged range gives the same chunks
//! wherever it moved), named by the BLAKE3 hash of their bytes, kept
//! zstd-compressed when that is smaller. A **manifest** lists the files of
//! one thing (an image, a checkpoint, a job's outputs) as sequences of
//! chunks, and is itself named by the BLAKE3 hash of its bytes. **Refs**
//! give manifests names (`images/tiny`, `checkpoints/7/3`).
//!
//! This is the one chunk format of vgrid: the VM runtime cuts a
//! checkpoint's memory stream with the same [`chunk::cut`] parameters, names
//! chunks the same way and stores them with the same codec, so a
//! checkpoint's memory goes into a store chunk for chunk.
//!
//! **Invariant: every read is verified.** A chunk is returned only after its
//! bytes hashed to its name; a manifest only after its bytes hashed to its
//! id and parsed whole. A damaged object is removed (so that it is fetched
//! again) and reported, never passed on.
//!
//! **Invariant: a write appears whole or not at all.** Objects are written
//! to a temporary file, fsynced, and renamed into place: a full disk or a
//! crash leaves the store as it was.

pub mod chunk;
pub mod manifest;
pub mod source;
pub mod store;

pub use chunk::{ChunkId, Codec};
pub use manifest::{FileEntry, Manifest, ManifestId, ManifestKind};
pub use source::{ChunkSource, Located, PackedChunk};
pub use store::{CasError, Store};
