//! `hearth kernel fetch|inspect|import|extract`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hearth_guestkit::{kernel, DataDir};

/// Fetches Debian's cloud kernel (or finds it already fetched) and says
/// where it is stored.
pub fn fetch(data: &DataDir) -> anyhow::Result<ExitCode> {
    // A closed stdout must not abort a download half-way.
    let mut progress = |line: &str| {
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    let assets = kernel::fetch_debian_cloud_kernel(data, &mut progress)?;
    println!("kernel:  {}", assets.vmlinuz.display());
    println!("modules: {}", assets.modules_dir().display());
    println!("default: {}", assets.version);
    Ok(ExitCode::SUCCESS)
}

/// Prints what a kernel file is.
pub fn inspect(path: &Path) -> anyhow::Result<ExitCode> {
    let info = kernel::inspect(path)?;
    println!("file:    {}", path.display());
    println!("{info}");
    Ok(ExitCode::SUCCESS)
}

/// Stores a kernel of the user's own with its modules (`None`: its
/// drivers are built in) and says how to boot it.
pub fn import(data: &DataDir, path: &Path, modules: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let modules = modules.map_or(kernel::KernelModules::BuiltIn, kernel::KernelModules::Dir);
    let stored = kernel::import(data, path, &modules)?;
    println!("kernel:  {}", stored.vmlinuz.display());
    match &stored.modules {
        kernel::KernelModules::Dir(dir) => println!("modules: {}", dir.display()),
        kernel::KernelModules::BuiltIn => println!("modules: none (drivers built in)"),
    }
    println!("release: {}", stored.release);
    println!("boot it: hearth vm run --kernel {}", stored.release);
    Ok(ExitCode::SUCCESS)
}

/// Writes the ELF vmlinux inside a bzImage and says what it wrote.
pub fn extract(bzimage: &Path, output: &Path) -> anyhow::Result<ExitCode> {
    let info = kernel::extract_to(bzimage, output)?;
    let version = info.release().unwrap_or("of unknown version");
    println!(
        "wrote {} ({} bytes, ELF vmlinux {version})",
        output.display(),
        info.size
    );
    Ok(ExitCode::SUCCESS)
}
