//! `hearth vm run`: boot one VM in the foreground.

use std::process::ExitCode;

use hearth_guestkit::DataDir;

use crate::cli::RunArgs;

pub fn run(_data: &DataDir, _args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
