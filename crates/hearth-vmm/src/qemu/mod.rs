//! The QEMU microvm backend.
