//! Test support shared by the crates' integration tests.
