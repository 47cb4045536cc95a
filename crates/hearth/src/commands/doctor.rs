//! `hearth doctor`: checks the host and says what to fix.

use std::process::ExitCode;

use hearth_guestkit::DataDir;

pub fn run(_data: &DataDir) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
