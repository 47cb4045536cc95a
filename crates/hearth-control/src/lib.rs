//! The VM lifecycle, independent of HTTP and of any one hypervisor.
