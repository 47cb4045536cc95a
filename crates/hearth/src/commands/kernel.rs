//! `hearth kernel fetch|inspect|extract`.

use std::path::Path;
use std::process::ExitCode;

use hearth_guestkit::DataDir;

pub fn fetch(_data: &DataDir) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}

pub fn inspect(_path: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}

pub fn extract(_bzimage: &Path, _output: &Path) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
