//! `hearth image build|list`.

use std::process::ExitCode;

use hearth_guestkit::DataDir;

use crate::cli::ImageName;

pub fn build(_data: &DataDir, _name: ImageName, _force: bool) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}

pub fn list(_data: &DataDir) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
