//! Writing a credential's files into a CLI VM: each file through one
//! command of the agent run as the provider's user (`runuser`), its
//! content on the command's stdin, never in its arguments, environment or
//! output. The user's umask is 077 for it, and the file is written beside
//! its target and renamed into place, so it is the user's, mode 0600,
//! from its first byte, and a tool never reads half of it.

use std::time::Duration;

use hearth_control::agent_link::{ExecEvent, ExecSpec, LinkHandle};
use hearth_vault::CredentialFiles;

use crate::providers::Provider;

/// How long one file's write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `$1` is the target. No credential byte is in the script or its words.
const SCRIPT: &str = r#"umask 077 && mkdir -p -- "$(dirname -- "$1")" && cat > "$1.hearth-new" && chmod 600 -- "$1.hearth-new" && mv -f -- "$1.hearth-new" "$1""#;

/// Writes every file of `files` (paths relative to the provider's home).
pub(crate) async fn write(
    link: &LinkHandle,
    provider: &Provider,
    files: &CredentialFiles,
) -> Result<(), String> {
    let home = provider.home();
    for file in &files.files {
        let path = format!("{home}/{}", file.path);
        write_one(link, &provider.user, &path, file.contents.expose())
            .await
            .map_err(|why| format!("{path} could not be written: {why}"))?;
    }
    Ok(())
}

async fn write_one(
    link: &LinkHandle,
    user: &str,
    path: &str,
    contents: &[u8],
) -> Result<(), String> {
    let argv = ["runuser", "-u", user, "--", "sh", "-c", SCRIPT, "sh", path];
    let spec = ExecSpec {
        argv: argv.iter().map(|w| w.to_string()).collect(),
        timeout: Some(WRITE_TIMEOUT),
        stdin: true,
        ..ExecSpec::default()
    };
    let mut exec = link.start_exec(spec).map_err(|e| e.to_string())?;
    exec.input
        .send(contents.to_vec())
        .and_then(|()| exec.input.end())
        .map_err(|e| e.to_string())?;
    let mut said = Vec::new();
    while let Some(event) = exec.events.recv().await {
        match event {
            // The script prints nothing of the content: its errors only.
            ExecEvent::Output(_, bytes) => said.extend(bytes),
            ExecEvent::Exit { code: Some(0), .. } => return Ok(()),
            ExecEvent::Exit {
                code, timed_out, ..
            } => {
                let said = String::from_utf8_lossy(&said).trim().to_owned();
                return Err(match timed_out {
                    true => "the write timed out".to_owned(),
                    false => format!("exit {code:?}: {said}"),
                });
            }
            ExecEvent::Error(why) => return Err(why),
            ExecEvent::Lost => return Err("the agent's channel dropped".to_owned()),
        }
    }
    Err("the agent's channel ended".to_owned())
}
