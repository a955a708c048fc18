//! The node-local VM runtime on QEMU.
