//! Fetching Debian's cloud kernel through the host's apt: the package
//! behind `linux-image-cloud-amd64` is downloaded (not installed),
//! unpacked, given a modules.dep, and stored in the data directory. The
//! version is marked default only once its files are complete, so a crash
//! never leaves a half kernel in use; a second fetch finds it and returns.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{inspect_bytes, write_atomically, KernelError};
use crate::lock::LockError;
use crate::{BuildLock, DataDir};

/// The Debian metapackage that depends on the current cloud kernel.
const METAPACKAGE: &str = "linux-image-cloud-amd64";
const IMAGE_PREFIX: &str = "linux-image-";
const MANIFEST: &str = "kernel.json";
/// Where sbin programs (depmod) live when PATH lacks them.
const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];
/// How much of a failed command's stderr goes into the error.
const STDERR_TAIL: usize = 600;

/// A stored kernel: the packaged bzImage and its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelAssets {
    /// The kernel release, as `uname -r` prints it in the guest.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// The directory containing `lib/modules/<version>/`.
    pub modules_root: PathBuf,
    /// `kernels/<version>/` in the data directory.
    pub dir: PathBuf,
}

/// `kernels/<version>/kernel.json`: where the kernel came from.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelManifest {
    version: String,
    package: String,
    package_version: String,
    vmlinuz_sha256: String,
}

/// Why `hearth kernel fetch` failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("could not take the kernel build lock")]
    Lock(#[source] LockError),
    #[error(
        "apt knows no package {package} ({detail}); run `apt-get update` (as root) \
         so that apt's package lists exist"
    )]
    NoPackageLists {
        package: &'static str,
        detail: String,
    },
    #[error("`apt-cache depends {package}` names no linux-image package; it printed: {output}")]
    NoKernelPackage {
        package: &'static str,
        output: String,
    },
    #[error("could not run {program}; install the {package} package")]
    Spawn {
        program: &'static str,
        package: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("the package {package} has no {expected}; is it a kernel image package?")]
    MissingFromPackage { package: String, expected: String },
    #[error("depmod wrote no {path}")]
    NoModulesDep { path: PathBuf },
    #[error("could not write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the downloaded kernel cannot be used")]
    Kernel(#[source] KernelError),
}

impl KernelAssets {
    fn at(data: &DataDir, version: &str) -> KernelAssets {
        let dir = data.kernel(version);
        KernelAssets {
            version: version.to_owned(),
            vmlinuz: dir.join("vmlinuz"),
            modules_root: dir.join("modules"),
            dir,
        }
    }

    /// `lib/modules/<version>/` under the modules root.
    pub fn modules_dir(&self) -> PathBuf {
        self.modules_root.join("lib/modules").join(&self.version)
    }

    /// The first file a complete kernel directory has that this one lacks.
    fn missing(&self) -> Option<PathBuf> {
        [
            self.vmlinuz.clone(),
            self.modules_dir().join("modules.dep"),
            self.dir.join(MANIFEST),
        ]
        .into_iter()
        .find(|path| !path.is_file())
    }
}

/// The kernel `hearth kernel fetch` stored and marked default.
pub fn default_kernel(data: &DataDir) -> Result<KernelAssets, KernelError> {
    let file = data.default_kernel_file();
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KernelError::NoDefaultKernel { file })
        }
        Err(source) => return Err(KernelError::Io { path: file, source }),
    };
    let version = text.trim();
    if !is_plain_version(version) {
        return Err(KernelError::BadDefaultFile { file });
    }
    let assets = KernelAssets::at(data, version);
    match assets.missing() {
        Some(missing) => Err(KernelError::IncompleteKernel {
            version: version.to_owned(),
            missing,
        }),
        None => Ok(assets),
    }
}

/// Makes Debian's current cloud kernel the default kernel in `data`,
/// downloading it unless it is already there. `progress` hears one line
/// per step.
pub fn fetch_debian_cloud_kernel(
    data: &DataDir,
    progress: &mut dyn FnMut(&str),
) -> Result<KernelAssets, FetchError> {
    let _lock = BuildLock::acquire(&data.build_lock("kernel")).map_err(FetchError::Lock)?;
    if let Ok(assets) = default_kernel(data) {
        progress(&format!("kernel {} is already fetched", assets.version));
        return Ok(assets);
    }
    progress(&format!("resolving {METAPACKAGE} with apt-cache"));
    let package = resolve_package()?;
    let version = package[IMAGE_PREFIX.len()..].to_owned();
    let assets = KernelAssets::at(data, &version);
    if assets.missing().is_some() {
        install(data, &package, &assets, progress)?;
    }
    let default = data.default_kernel_file();
    write_atomically(&default, format!("{version}\n").as_bytes()).map_err(io_error(&default))?;
    progress(&format!(
        "stored kernel {version} in {}",
        assets.dir.display()
    ));
    Ok(assets)
}

/// The versioned image package the metapackage depends on.
fn resolve_package() -> Result<String, FetchError> {
    let output = run("apt-cache", "apt", &["depends", METAPACKAGE], None);
    let output = match output {
        Ok(stdout) => stdout,
        Err(FetchError::CommandFailed { stderr, .. }) => {
            return Err(FetchError::NoPackageLists {
                package: METAPACKAGE,
                detail: stderr,
            })
        }
        Err(other) => return Err(other),
    };
    parse_depends(&output).ok_or_else(|| FetchError::NoKernelPackage {
        package: METAPACKAGE,
        output: output.trim().to_owned(),
    })
}

/// The first `Depends: linux-image-<version>` in `apt-cache depends` output.
fn parse_depends(output: &str) -> Option<String> {
    output
        .lines()
        .filter_map(|line| line.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(|target| target.trim().trim_matches(|c| c == '<' || c == '>'))
        .find(|name| {
            name.strip_prefix(IMAGE_PREFIX)
                .is_some_and(is_plain_version)
        })
        .map(str::to_owned)
}

/// A version that is safe as one path component.
pub(crate) fn is_plain_version(version: &str) -> bool {
    !version.is_empty()
        && !version.starts_with('.')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_+~".contains(c))
}

/// Downloads, unpacks and stores `package` as `assets` describes.
fn install(
    data: &DataDir,
    package: &str,
    assets: &KernelAssets,
    progress: &mut dyn FnMut(&str),
) -> Result<(), FetchError> {
    let kernels = data.kernels();
    fs::create_dir_all(&kernels).map_err(io_error(&kernels))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&kernels)
        .map_err(io_error(&kernels))?;
    progress(&format!("downloading {package} with apt-get"));
    let deb = download(package, work.path())?;
    let name = deb.file_name().unwrap_or(deb.as_os_str());
    progress(&format!("unpacking {}", name.to_string_lossy()));
    let unpacked = work.path().join("unpacked");
    run(
        "dpkg-deb",
        "dpkg",
        &[os("-x"), deb.as_os_str(), unpacked.as_os_str()],
        None,
    )?;
    let stage = work.path().join("stage");
    stage_files(&unpacked, &stage, package, &assets.version)?;
    progress("generating modules.dep with depmod");
    depmod(&stage.join("modules"), &assets.version)?;
    write_manifest(&stage, package, &deb, &assets.version)?;
    replace_dir(&stage, &assets.dir)
}

/// `apt-get download` into `work/download`; the path of the .deb.
fn download(package: &str, work: &Path) -> Result<PathBuf, FetchError> {
    let dir = work.join("download");
    fs::create_dir(&dir).map_err(io_error(&dir))?;
    let args = ["-q", "-o", "APT::Sandbox::User=root", "download", package];
    run("apt-get", "apt", &args, Some(&dir))?;
    let entries = fs::read_dir(&dir).map_err(io_error(&dir))?;
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension() == Some(OsStr::new("deb")))
        .ok_or_else(|| missing(package, "downloaded .deb file"))
}

/// Moves the kernel and its modules from the unpacked package into the
/// layout of a kernel directory.
fn stage_files(
    unpacked: &Path,
    stage: &Path,
    package: &str,
    version: &str,
) -> Result<(), FetchError> {
    let modules_parent = stage.join("modules/lib/modules");
    fs::create_dir_all(&modules_parent).map_err(io_error(&modules_parent))?;
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{version}"));
    if !vmlinuz.is_file() {
        return Err(missing(package, &format!("boot/vmlinuz-{version}")));
    }
    rename(&vmlinuz, &stage.join("vmlinuz"))?;
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|dir| unpacked.join(dir).join(version))
        .find(|dir| dir.is_dir())
        .ok_or_else(|| missing(package, &format!("lib/modules/{version}/")))?;
    rename(&modules, &modules_parent.join(version))
}

/// Generates modules.dep (the package ships none) under `root`.
fn depmod(root: &Path, version: &str) -> Result<(), FetchError> {
    run(
        "depmod",
        "kmod",
        &[os("-b"), root.as_os_str(), os(version)],
        None,
    )?;
    let dep = root.join("lib/modules").join(version).join("modules.dep");
    if !dep.is_file() {
        return Err(FetchError::NoModulesDep { path: dep });
    }
    Ok(())
}

/// Checks the staged vmlinuz is a kernel and records where it came from.
fn write_manifest(
    stage: &Path,
    package: &str,
    deb: &Path,
    version: &str,
) -> Result<(), FetchError> {
    let vmlinuz = stage.join("vmlinuz");
    let image = fs::read(&vmlinuz).map_err(|source| {
        FetchError::Kernel(KernelError::Io {
            path: vmlinuz.clone(),
            source,
        })
    })?;
    inspect_bytes(&image).map_err(|source| {
        FetchError::Kernel(KernelError::Format {
            path: vmlinuz.clone(),
            source,
        })
    })?;
    let package_version = run(
        "dpkg-deb",
        "dpkg",
        &[os("--field"), deb.as_os_str(), os("Version")],
        None,
    )?;
    let manifest = KernelManifest {
        version: version.to_owned(),
        package: package.to_owned(),
        package_version: package_version.trim().to_owned(),
        vmlinuz_sha256: hex::encode(Sha256::digest(&image)),
    };
    let path = stage.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    fs::write(&path, json).map_err(io_error(&path))
}

/// Puts the staged directory at `dir`, replacing an incomplete one.
fn replace_dir(stage: &Path, dir: &Path) -> Result<(), FetchError> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io_error(dir))?;
    }
    rename(stage, dir)
}

fn rename(from: &Path, to: &Path) -> Result<(), FetchError> {
    fs::rename(from, to).map_err(io_error(to))
}

/// Runs `program` with fixed arguments (no shell); its stdout on success.
fn run<S: AsRef<OsStr>>(
    program: &'static str,
    package: &'static str,
    args: &[S],
    cwd: Option<&Path>,
) -> Result<String, FetchError> {
    let mut command = Command::new(locate(program));
    command.args(args).env("LC_ALL", "C").stdin(Stdio::null());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    tracing::debug!(?command, "running");
    let output = command.output().map_err(|source| FetchError::Spawn {
        program,
        package,
        source,
    })?;
    if !output.status.success() {
        return Err(FetchError::CommandFailed {
            command: describe(program, args),
            status: output.status,
            stderr: tail(&String::from_utf8_lossy(&output.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `program` on PATH, else in an sbin directory (non-root PATHs lack
/// them), else the bare name so that spawning reports it missing.
fn locate(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

fn describe<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    format!("{program} {}", args.join(" "))
}

fn tail(text: &str) -> String {
    let text = text.trim();
    let start = text.len().saturating_sub(STDERR_TAIL);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_owned()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn missing(package: &str, expected: &str) -> FetchError {
    FetchError::MissingFromPackage {
        package: package.to_owned(),
        expected: expected.to_owned(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_versioned_image_package_is_found_in_apt_cache_output() {
        let output = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(output).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
    }

    #[test]
    fn other_dependencies_and_virtual_markers_are_handled() {
        let output = "linux-image-cloud-amd64\n  Depends: libc6\n \
                      |Depends: <linux-image-6.12.9+bpo-cloud-amd64>\n";
        assert_eq!(
            parse_depends(output).as_deref(),
            Some("linux-image-6.12.9+bpo-cloud-amd64")
        );
        assert_eq!(parse_depends("Depends: libc6\n"), None);
        assert_eq!(parse_depends("Depends: linux-image-../x\n"), None);
    }

    #[test]
    fn versions_must_be_one_safe_path_component() {
        assert!(is_plain_version("6.1.0-56-cloud-amd64"));
        for bad in ["", "..", ".hidden", "a/b", "a b"] {
            assert!(!is_plain_version(bad), "{bad:?}");
        }
    }

    #[test]
    fn default_kernel_says_to_fetch_when_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let err = default_kernel(&DataDir::new(dir.path())).unwrap_err();
        assert!(
            err.to_string().contains("run `hearth kernel fetch`"),
            "{err}"
        );
    }

    #[test]
    fn default_kernel_refuses_an_incomplete_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        fs::create_dir_all(data.kernel("6.1.0-1-cloud-amd64")).unwrap();
        fs::write(data.default_kernel_file(), "6.1.0-1-cloud-amd64\n").unwrap();
        let err = default_kernel(&data).unwrap_err();
        assert!(matches!(err, KernelError::IncompleteKernel { .. }), "{err}");
        fs::write(data.default_kernel_file(), "../../etc\n").unwrap();
        let err = default_kernel(&data).unwrap_err();
        assert!(matches!(err, KernelError::BadDefaultFile { .. }), "{err}");
    }

    #[test]
    fn stderr_is_cut_to_its_tail() {
        let long = "é".repeat(1000);
        assert!(tail(&long).len() <= STDERR_TAIL);
        assert_eq!(tail("  short\n"), "short");
    }
}
