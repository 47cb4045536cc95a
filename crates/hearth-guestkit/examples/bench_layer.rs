//! Benchmark: creating a VM's writable layer vs copying a 1 GiB image.
//!
//! ```text
//! cargo run --release -p hearth-guestkit --example bench_layer [RUNS] [DIR]
//! ```
//!
//! RUNS (default 21) layer creations and max(RUNS / 4, 3) full copies are
//! timed; the medians and their ratio are printed. The image copied is a
//! 1 GiB file of pseudo-random bytes (no holes, nothing to deduplicate),
//! written once in a temporary folder under DIR (default: the system's
//! temporary folder; use a folder on the filesystem your data directory is
//! on). The layer template is built first and timed separately: it is made
//! once per host, not per VM.

use std::error::Error;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_guestkit::layer::{create_layer, ensure_layer_template, DEFAULT_LAYER_SIZE};
use hearth_guestkit::DataDir;

const IMAGE_SIZE: u64 = 1024 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(21);
    let base = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base)?;
    let data = DataDir::new(dir.path().join("data"));

    let started = Instant::now();
    ensure_layer_template(&data, DEFAULT_LAYER_SIZE)?;
    println!("layer template (once per host): {:?}", started.elapsed());

    let layer = median(runs, |i| {
        let dest = dir.path().join(format!("layer-{i}.ext4"));
        let took = time(|| create_layer(&data, &dest))?;
        std::fs::remove_file(&dest)?;
        Ok(took)
    })?;

    let image = dir.path().join("image.ext4");
    write_random_file(&image, IMAGE_SIZE)?;
    let copy_runs = (runs / 4).max(3);
    let copy = median(copy_runs, |i| {
        let dest = dir.path().join(format!("copy-{i}.ext4"));
        let took = time(|| std::fs::copy(&image, &dest))?;
        std::fs::remove_file(&dest)?;
        Ok(took)
    })?;

    println!("layer creation, median of {runs}: {layer:?}");
    println!("full copy of a 1 GiB image, median of {copy_runs}: {copy:?}");
    println!(
        "full copy / layer creation: {:.0}x",
        copy.as_secs_f64() / layer.as_secs_f64()
    );
    Ok(())
}

fn time<T, E: Error + 'static>(
    f: impl FnOnce() -> Result<T, E>,
) -> Result<Duration, Box<dyn Error>> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed())
}

fn median(
    runs: usize,
    mut one: impl FnMut(usize) -> Result<Duration, Box<dyn Error>>,
) -> Result<Duration, Box<dyn Error>> {
    let mut times = (0..runs.max(1))
        .map(&mut one)
        .collect::<Result<Vec<_>, _>>()?;
    times.sort();
    Ok(times[times.len() / 2])
}

/// `size` bytes from xorshift64*, written and synced.
fn write_random_file(path: &Path, size: u64) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; CHUNK];
    for _ in 0..size / CHUNK as u64 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        file.write_all(&chunk)?;
    }
    file.sync_all()
}
