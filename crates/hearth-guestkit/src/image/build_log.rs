//! An image build's log: every line the build and its tools print goes to
//! `build.log` in the build folder; the lines a person wants to see while
//! waiting also go to the caller's progress. A successful build keeps the
//! log in the image's folder (`images/<name>/build.log`); a failed one at
//! `images/<name>.failed.log`, and its error says so.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tool::{Tool, ToolError};
use super::{io_error, ImageError};

pub struct BuildLog<'a> {
    file: File,
    image: String,
    /// Where the log will be when the build fails.
    kept_at: PathBuf,
    progress: &'a mut dyn FnMut(&str),
}

impl std::fmt::Debug for BuildLog<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildLog")
            .field("image", &self.image)
            .finish()
    }
}

impl<'a> BuildLog<'a> {
    pub fn create(
        path: &Path,
        image: &str,
        kept_at: PathBuf,
        progress: &'a mut dyn FnMut(&str),
    ) -> Result<Self, ImageError> {
        let file = File::create(path).map_err(io_error("create", path))?;
        Ok(BuildLog {
            file,
            image: image.to_owned(),
            kept_at,
            progress,
        })
    }

    /// A progress line: shown and logged.
    pub fn say(&mut self, line: &str) {
        self.note(line);
        (self.progress)(line);
    }

    /// A line for the log only.
    pub fn note(&mut self, line: &str) {
        let _ = writeln!(self.file, "{line}");
    }

    /// Runs `cmd` to completion; its whole output goes to the log.
    pub fn run(&mut self, tool: Tool, cmd: &mut Command) -> Result<String, ToolError> {
        self.note(&format!("$ {cmd:?}"));
        let result = tool.run(cmd);
        match &result {
            Ok(out) => self.note(out.trim_end()),
            Err(e) => self.note(&e.to_string()),
        }
        result
    }

    /// Runs `cmd`, logging each line of its output as it comes (standard
    /// output into the log file directly); `show` picks the lines that are
    /// also progress.
    pub fn run_streaming(
        &mut self,
        tool: Tool,
        cmd: &mut Command,
        show: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(), ToolError> {
        self.note(&format!("$ {cmd:?}"));
        let _ = self.file.flush();
        let stdout = self
            .file
            .try_clone()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let (file, progress) = (&mut self.file, &mut self.progress);
        let result = tool.run_streaming_to(cmd, stdout, &mut |line| {
            let _ = writeln!(file, "{line}");
            if show(line) {
                progress(line);
            }
        });
        if let Err(e) = &result {
            self.note(&e.to_string());
        }
        result
    }

    /// A failed step's error, naming the step, what it was working on and
    /// where the log is kept.
    pub fn failed(&self, step: &'static str, what: &str, source: ImageError) -> ImageError {
        ImageError::StepFailed {
            image: self.image.clone(),
            step,
            what: what.to_owned(),
            log: self.kept_at.clone(),
            source: Box::new(source),
        }
    }
}
