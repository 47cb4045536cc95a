//! Fetching Debian's cloud kernel into the shared test data directory:
//! the stored layout, and that a second fetch reuses it without apt.

use std::time::{Duration, Instant};

use hearth_guestkit::kernel::{default_kernel, fetch_debian_cloud_kernel};
use hearth_guestkit::DataDir;

#[test]
fn fetch_stores_a_complete_kernel_and_is_idempotent() {
    let data = DataDir::new(hearth_testkit::test_data_dir());
    let first = fetch_debian_cloud_kernel(&data, &mut |line| eprintln!("fetch: {line}")).unwrap();
    assert_eq!(first.dir, data.kernel(&first.version));
    assert!(first.vmlinuz.is_file());
    let modules = first.modules_root.join("lib/modules").join(&first.version);
    assert!(modules.join("modules.dep").is_file());
    assert!(modules.join("kernel").is_dir());
    let manifest = std::fs::read_to_string(first.dir.join("kernel.json")).unwrap();
    assert!(manifest.contains("\"vmlinuz_sha256\""), "{manifest}");
    assert!(manifest.contains(&format!("linux-image-{}", first.version)));
    let named = std::fs::read_to_string(data.default_kernel_file()).unwrap();
    assert_eq!(named.trim(), first.version);

    let started = Instant::now();
    let mut lines = Vec::new();
    let second = fetch_debian_cloud_kernel(&data, &mut |line| lines.push(line.to_owned())).unwrap();
    assert_eq!(second, first);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a second fetch took {:?}",
        started.elapsed()
    );
    assert!(
        lines.iter().all(|l| !l.contains("downloading")),
        "{lines:?}"
    );
    assert_eq!(default_kernel(&data).unwrap(), first);
}
