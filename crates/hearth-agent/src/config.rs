//! Applying a [`GuestConfig`]: the image's (`/etc/hearth/agent.json`) at
//! start, the host's once per agent instance. Hostname, environment and
//! files are applied here; the services are merged (the host's replace the
//! image's of the same name) and handed to the supervisor by the caller.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hearth_types::guest::{EnvVar, GuestConfig, GuestFile, ServiceSpec};

/// Where images put their configuration.
pub const IMAGE_CONFIG: &str = "/etc/hearth/agent.json";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path} failed")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid agent configuration (see docs/agent.md)")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("setting the hostname failed")]
    Hostname(#[source] io::Error),
    #[error("configuring the guest's network failed")]
    Network(#[source] crate::network::NetworkError),
    #[error("writing {path} failed")]
    File {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The image's configuration; `None` when the image has none.
pub fn load(path: &Path) -> Result<Option<GuestConfig>, ConfigError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let config: GuestConfig =
        serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
    config.check().map_err(ConfigError::Invalid)?;
    Ok(Some(config))
}

/// Sets the hostname, configures the NIC and writes the files; every
/// failure is returned, the rest is still applied.
pub fn apply_system(config: &GuestConfig) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if let Some(net) = &config.network {
        let resolv = Path::new(crate::network::RESOLV_CONF);
        if let Err(e) = crate::network::apply(net, resolv) {
            errors.push(ConfigError::Network(e));
        }
    }
    if let Some(name) = &config.hostname {
        if let Err(e) = set_hostname(name) {
            errors.push(e);
        }
    }
    for f in &config.files {
        if let Err(e) = write_config_file(f, Path::new(crate::user::PASSWD)) {
            errors.push(e);
        }
    }
    errors
}

/// One of the configuration's files, owned by its `owner` (with the
/// directories made for it) when it names one.
fn write_config_file(f: &GuestFile, passwd: &Path) -> Result<(), ConfigError> {
    let path = Path::new(&f.path);
    let fail = |source| ConfigError::File {
        path: f.path.clone(),
        source,
    };
    let owner = match &f.owner {
        Some(user) => Some(
            crate::user::lookup(user, passwd)
                .map_err(|why| ConfigError::Invalid(format!("the owner of {}: {why}", f.path)))?,
        ),
        None => None,
    };
    let made = missing_ancestors(path);
    write_atomically(path, f.content.as_bytes(), f.mode.unwrap_or(0o644)).map_err(fail)?;
    if let Some(ids) = owner {
        for p in made.iter().map(|d| d.as_path()).chain([path]) {
            std::os::unix::fs::chown(p, Some(ids.uid), Some(ids.gid)).map_err(fail)?;
        }
    }
    Ok(())
}

/// The directories above `path` that do not exist yet, outermost first.
fn missing_ancestors(path: &Path) -> Vec<std::path::PathBuf> {
    let mut missing: Vec<_> = path
        .ancestors()
        .skip(1)
        .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    missing
}

/// `sethostname(2)` and `/etc/hostname`.
pub fn set_hostname(name: &str) -> Result<(), ConfigError> {
    // SAFETY: the pointer and length describe `name`'s bytes, valid for the call.
    let r = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if r != 0 {
        return Err(ConfigError::Hostname(io::Error::last_os_error()));
    }
    write_atomically(
        Path::new("/etc/hostname"),
        format!("{name}\n").as_bytes(),
        0o644,
    )
    .map_err(|source| ConfigError::File {
        path: "/etc/hostname".into(),
        source,
    })
}

/// Writes `content` to a temporary file beside `path`, sets `mode`, and
/// renames it into place; parents are created. A reader sees the old file
/// or the new one, never half of it.
pub fn write_atomically(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    std::fs::create_dir_all(parent)?;
    let tmp = temp_beside(path);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `.NAME.hearth-PID-N` in the same directory (so the rename stays on one
/// file system).
pub fn temp_beside(path: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = N.fetch_add(1, Ordering::SeqCst);
    path.with_file_name(format!(".{name}.hearth-{}-{n}", std::process::id()))
}

/// The image's variables with the host's on top (same name: the host's).
pub fn merge_env(image: &[EnvVar], host: &[EnvVar]) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = image
        .iter()
        .filter(|v| !host.iter().any(|h| h.name == v.name))
        .cloned()
        .collect();
    env.extend(host.iter().cloned());
    env
}

/// The image's services with the host's: same name, the host's replaces it.
pub fn merge_services(image: &[ServiceSpec], host: &[ServiceSpec]) -> Vec<ServiceSpec> {
    let mut services: Vec<ServiceSpec> = image
        .iter()
        .filter(|s| !host.iter().any(|h| h.name == s.name))
        .cloned()
        .collect();
    services.extend(host.iter().cloned());
    services
}

#[cfg(test)]
mod tests {
    use hearth_types::guest::GuestFile;

    use super::*;

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
        }
    }

    fn service(name: &str, prog: &str) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({"name": name, "argv": [prog]})).unwrap()
    }

    #[test]
    fn the_host_wins_by_name() {
        let env = merge_env(&[var("A", "1"), var("B", "2")], &[var("B", "3")]);
        assert_eq!(env, [var("A", "1"), var("B", "3")]);
        let s = merge_services(
            &[service("web", "/img"), service("db", "/db")],
            &[service("web", "/host")],
        );
        assert_eq!(s, [service("db", "/db"), service("web", "/host")]);
    }

    #[test]
    fn an_owned_file_and_the_directories_made_for_it_belong_to_its_owner() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        // As root, ids no file here has yet (so a missing chown shows);
        // otherwise our own (chown to them needs no privilege).
        let (uid, gid) = ids_to_give();
        std::fs::write(&passwd, format!("tool:x:{uid}:{gid}::/home/tool:/bin/sh\n")).unwrap();
        let file = dir.path().join("home/.tool/settings.json");
        let f = GuestFile {
            path: file.display().to_string(),
            content: "{}".into(),
            mode: Some(0o600),
            owner: Some("tool".into()),
        };
        write_config_file(&f, &passwd).unwrap();
        for p in [
            dir.path().join("home"),
            dir.path().join("home/.tool"),
            file.clone(),
        ] {
            let meta = std::fs::metadata(&p).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{}", p.display());
        }
        let unknown = GuestFile {
            owner: Some("nobody-here".into()),
            ..f
        };
        let err = write_config_file(&unknown, &passwd)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nobody-here"), "{err}");
    }

    fn ids_to_give() -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let probe = tempfile::NamedTempFile::new().unwrap();
        let own = probe.as_file().metadata().unwrap();
        if own.uid() == 0 {
            (4321, 4322)
        } else {
            (own.uid(), own.gid())
        }
    }

    #[test]
    fn files_are_written_with_parents_and_mode_and_no_temp_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.conf");
        let config = GuestConfig {
            files: vec![GuestFile {
                path: path.display().to_string(),
                content: "x=1\n".into(),
                mode: Some(0o600),
                owner: None,
            }],
            ..Default::default()
        };
        assert!(apply_system(&config).is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x=1\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn a_file_that_cannot_be_written_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let config = GuestConfig {
            files: vec![GuestFile {
                path: blocker.join("under-a-file").display().to_string(),
                content: String::new(),
                mode: None,
                owner: None,
            }],
            ..Default::default()
        };
        let errors = apply_system(&config);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("under-a-file"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn the_image_config_is_optional_but_must_be_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        assert!(load(&path).unwrap().is_none());
        std::fs::write(
            &path,
            r#"{"services":[{"name":"web","argv":["/bin/web"]}]}"#,
        )
        .unwrap();
        assert_eq!(load(&path).unwrap().unwrap().services.len(), 1);
        std::fs::write(&path, r#"{"servces":[]}"#).unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.to_string().contains("agent.json"), "{err}");
        std::fs::write(&path, r#"{"hostname":"-bad"}"#).unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("hostname"));
    }
}
