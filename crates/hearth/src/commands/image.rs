//! `hearth image build|list|show|rm`.

use std::process::ExitCode;
use std::time::Instant;

use hearth_guestkit::image::{self, format_utc, AgentChoice, ImageInfo, Manifest};
use hearth_guestkit::DataDir;

/// `NAME|FILE`: a built-in recipe or a recipe file; `no_agent` builds it
/// without the guest agent, as asked.
pub fn build(
    data: &DataDir,
    recipe: &str,
    force: bool,
    no_agent: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = image::load_recipe(recipe)?;
    let with = match no_agent {
        true => AgentChoice::Without,
        false => AgentChoice::Find,
    };
    let started = Instant::now();
    let info = image::ensure_recipe(data, &loaded, force, with, &mut |line| {
        eprintln!("  {line}")
    })?;
    let what = if info.reused {
        "reused (inputs unchanged; --force rebuilds)".to_owned()
    } else {
        format!("built in {:.1} s", started.elapsed().as_secs_f64())
    };
    println!(
        "{}: {} ({}), {what}",
        info.name,
        info.rootfs.display(),
        size(info.size_bytes)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn list(data: &DataDir) -> anyhow::Result<ExitCode> {
    let images = image::list_images(data)?;
    if images.is_empty() {
        println!(
            "no images built: run `hearth image build minimal` (or debian, cli, a recipe file)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = images
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$} {:>10}  {:<20}  PATH",
        "NAME", "SIZE", "BUILT (UTC)"
    );
    for info in &images {
        println!(
            "{:<width$} {:>10}  {:<20}  {}",
            info.name,
            size_of(info),
            format_utc(info.built_at),
            info.rootfs.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(data: &DataDir, name: &str, all_packages: bool) -> anyhow::Result<ExitCode> {
    let rootfs = image::find_image(data, name)?;
    let manifest = image::read_manifest(data, name)?
        .ok_or_else(|| anyhow::anyhow!("image {name} is not built"))?;
    let dir = data.image(name);
    println!("name:     {}", manifest.name);
    println!("recipe:   {}", manifest.origin);
    println!("rootfs:   {}", rootfs.display());
    println!("size:     {}", size(manifest.size_bytes));
    println!("built:    {}", manifest.built_at_utc);
    println!("build log: {}", dir.join(image::BUILD_LOG_FILE).display());
    if let Some(vm) = manifest.vm {
        println!(
            "vm size:  {} vCPUs, {} MiB (default for vm create/run)",
            vm.vcpus, vm.memory_mib
        );
    }
    print_inputs(&manifest);
    print_packages(&manifest, all_packages);
    if let Ok(text) = std::fs::read_to_string(dir.join(image::RECIPE_FILE)) {
        println!("recipe text:");
        for line in text.lines() {
            println!("  {line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_inputs(m: &Manifest) {
    let i = &m.inputs;
    println!("inputs:");
    println!("  recipe sha256:  {}", i.recipe_sha256);
    println!("  base:           {} (version {})", i.base, i.base_version);
    println!("  scripts sha256: {}", i.scripts_sha256);
    if let Some(b) = &i.busybox_sha256 {
        println!("  busybox sha256: {b}");
    }
    println!("  agent sha256:   {}", i.agent_sha256);
    for s in &m.sources {
        println!("  apt source:     {s}");
    }
}

fn print_packages(m: &Manifest, all: bool) {
    let debian = &m.resolved.debian;
    if !debian.is_empty() {
        println!("debian packages ({} installed):", debian.len());
        let names: Vec<&String> = if all {
            debian.keys().collect()
        } else {
            m.packages.iter().collect()
        };
        for name in names {
            let bare = name.split('=').next().unwrap_or(name);
            let version = debian.get(bare).map_or("not installed", String::as_str);
            println!("  {bare} {version}");
        }
    }
    if !m.resolved.npm.is_empty() {
        println!("npm:");
        for (name, version) in &m.resolved.npm {
            println!("  {name} {version}");
        }
    }
}

pub fn rm(data: &DataDir, name: &str) -> anyhow::Result<ExitCode> {
    image::remove_image(data, name)?;
    println!("{name}: removed (VMs already running from it keep their copy until they stop)");
    Ok(ExitCode::SUCCESS)
}

fn size_of(info: &ImageInfo) -> String {
    size(info.size_bytes)
}

fn size(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
