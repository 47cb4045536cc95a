//! Guest kernels: what a file is (ELF vmlinux or bzImage and its payload
//! compression), the ELF out of a bzImage, and fetching Debian's kernel.

/// Why a file could not be used as a kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("could not read {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
