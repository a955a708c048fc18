//! A small typed async client for the QEMU Machine Protocol (QMP).
