//! The Firecracker backend: spawned with its API socket and configured
//! through its REST API with typed requests, then InstanceStart.
