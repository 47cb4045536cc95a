//! Running the host tools images are made with (mkfs.ext4, mmdebstrap,
//! tar, npm), always with fixed argument vectors and never through a shell, and
//! turning their failures into errors that say which package to install.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio};

/// A host tool could not be run, or reported failure.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("could not run {program}: install it with `apt-get install {package}`")]
    Spawn {
        program: String,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {output}")]
    Failed {
        program: String,
        status: ExitStatus,
        /// The last lines it printed on standard error.
        output: String,
    },
}

/// How many trailing lines of a failed tool's output an error keeps.
const KEPT_LINES: usize = 20;

/// A host program and the Debian package that provides it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const MKFS_EXT4: Tool = Tool {
    program: "mkfs.ext4",
    package: "e2fsprogs",
};
pub const MMDEBSTRAP: Tool = Tool {
    program: "mmdebstrap",
    package: "mmdebstrap",
};
pub const TAR: Tool = Tool {
    program: "tar",
    package: "tar",
};
/// Fetches Node.js and installs npm packages into an image's tree.
pub const NPM: Tool = Tool {
    program: "npm",
    package: "npm",
};

impl Tool {
    pub fn command(self) -> Command {
        let mut cmd = Command::new(self.program);
        cmd.stdin(Stdio::null());
        cmd
    }

    fn spawn_error(self, source: std::io::Error) -> ToolError {
        ToolError::Spawn {
            program: self.program.to_owned(),
            package: self.package,
            source,
        }
    }

    /// Runs to completion, capturing its output; non-zero exit is an error.
    /// Returns standard output and standard error, concatenated.
    pub fn run(self, cmd: &mut Command) -> Result<String, ToolError> {
        let out = cmd.output().map_err(|e| self.spawn_error(e))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            return Err(self.failed(out.status, &text));
        }
        Ok(text)
    }

    /// Runs to completion, handing each line it prints on standard error to
    /// `progress` as it comes (for steps that take many seconds); standard
    /// output goes to `stdout`.
    pub fn run_streaming_to(
        self,
        cmd: &mut Command,
        stdout: Stdio,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), ToolError> {
        let mut child = cmd
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        let mut seen = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                progress(&line);
                seen.push(line);
            }
        }
        let status = child.wait().map_err(|e| self.spawn_error(e))?;
        if !status.success() {
            return Err(self.failed(status, &seen.join("\n")));
        }
        Ok(())
    }

    fn failed(self, status: ExitStatus, output: &str) -> ToolError {
        let lines: Vec<&str> = output.lines().collect();
        let tail = &lines[lines.len().saturating_sub(KEPT_LINES)..];
        ToolError::Failed {
            program: self.program.to_owned(),
            status,
            output: tail.join("\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_the_package_to_install() {
        let tool = Tool {
            program: "hearth-no-such-program",
            package: "hearth-pkg",
        };
        let err = tool.run(&mut tool.command()).unwrap_err();
        assert!(
            err.to_string().contains("apt-get install hearth-pkg"),
            "{err}"
        );
    }

    #[test]
    fn failure_keeps_the_tail_of_the_output() {
        let tool = Tool {
            program: "sh",
            package: "dash",
        };
        let mut cmd = tool.command();
        cmd.args(["-c", "echo first; echo last >&2; exit 3"]);
        let err = tool.run(&mut cmd).unwrap_err().to_string();
        assert!(err.contains("sh failed") && err.contains("last"), "{err}");
    }

    #[test]
    fn streaming_hands_over_each_line() {
        let tool = Tool {
            program: "sh",
            package: "dash",
        };
        let mut cmd = tool.command();
        cmd.args(["-c", "echo one >&2; echo two >&2"]);
        let mut lines = Vec::new();
        tool.run_streaming_to(&mut cmd, Stdio::null(), &mut |l| lines.push(l.to_owned()))
            .unwrap();
        assert_eq!(lines, ["one", "two"]);
    }
}
