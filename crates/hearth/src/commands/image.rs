//! `hearth image build|list`.

use std::process::ExitCode;
use std::time::Instant;

use hearth_guestkit::image::{self, format_utc, AgentChoice, ImageInfo};
use hearth_guestkit::DataDir;

use crate::cli::ImageName;

pub fn build(
    data: &DataDir,
    name: ImageName,
    force: bool,
    no_agent: bool,
) -> anyhow::Result<ExitCode> {
    let name = match name {
        ImageName::Minimal => image::ImageName::Minimal,
        ImageName::Debian => image::ImageName::Debian,
    };
    let with = match no_agent {
        true => AgentChoice::Without,
        false => AgentChoice::Find,
    };
    let started = Instant::now();
    let info = image::ensure_image(data, name, force, with, &mut |line| eprintln!("  {line}"))?;
    let what = if info.reused {
        "reused (inputs unchanged; --force rebuilds)".to_owned()
    } else {
        format!("built in {:.1} s", started.elapsed().as_secs_f64())
    };
    println!(
        "{}: {} ({}), {what}",
        info.name,
        info.rootfs.display(),
        size(&info)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn list(data: &DataDir) -> anyhow::Result<ExitCode> {
    let images = image::list_images(data)?;
    if images.is_empty() {
        println!("no images built: run `hearth image build minimal` (or debian)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<8} {:>10}  {:<20}  PATH", "NAME", "SIZE", "BUILT (UTC)");
    for info in &images {
        println!(
            "{:<8} {:>10}  {:<20}  {}",
            info.name.as_str(),
            size(info),
            format_utc(info.built_at),
            info.rootfs.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn size(info: &ImageInfo) -> String {
    format!("{:.1} MiB", info.size_bytes as f64 / (1024.0 * 1024.0))
}
