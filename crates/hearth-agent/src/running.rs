//! The execs of one session that are still running, by id: what the host's
//! `exec_input`, `exec_input_end`, `exec_resize` and `exec_signal` act on.
//! An exec adds itself once started and removes itself when it ended, so a
//! message for an unknown or finished exec finds nothing and is ignored.
//!
//! When the session ends its interactive execs (started with `stdin`) are
//! hung up: their client is gone for good. The others run on (see
//! docs/agent.md).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

use hearth_types::guest::TermSize;

use crate::input::Input;
use crate::pty;
use crate::reaper::reaper;

/// One exec, as the session sees it. Made and registered by the session
/// before it reads its next message, so input, resizes and signals sent
/// right after the `exec` find it even while the command is still being
/// started: input waits in the queue, the last resize and the signals are
/// applied once it runs.
#[derive(Debug)]
pub struct Control {
    pub id: u64,
    /// With `stdin`: its input queue.
    pub input: Option<Input>,
    process: Mutex<Process>,
}

#[derive(Debug, Default)]
struct Process {
    /// The command's pid, also its process group's id; set at the start.
    pid: Option<u32>,
    /// With `tty`: the terminal's master, for resizes.
    master: Option<File>,
    /// Asked for before the start.
    size: Option<TermSize>,
    signals: Vec<i32>,
}

impl Control {
    pub fn new(id: u64, input: Option<Input>) -> Arc<Control> {
        Arc::new(Control {
            id,
            input,
            process: Mutex::default(),
        })
    }

    /// The command runs as `pid` (on the terminal `master`): what was
    /// asked for before now happens.
    pub fn started(&self, pid: u32, master: Option<File>) {
        let mut p = self.lock();
        p.pid = Some(pid);
        p.master = master;
        if let Some(size) = p.size.take() {
            self.resize_now(&p, size);
        }
        for signal in std::mem::take(&mut p.signals) {
            reaper().signal_group(pid, signal);
        }
    }

    pub fn input(&self, data: Vec<u8>) {
        if let Some(input) = &self.input {
            input.push(data);
        }
    }

    pub fn end_input(&self) {
        if let Some(input) = &self.input {
            input.end();
        }
    }

    /// Stops the input now (the command ended or hung up).
    pub fn close_input(&self) {
        if let Some(input) = &self.input {
            input.close();
        }
    }

    pub fn resize(&self, size: TermSize) {
        let mut p = self.lock();
        match p.pid {
            Some(_) => self.resize_now(&p, size),
            None => p.size = Some(size),
        }
    }

    /// Sends `signal` to the command's process group, unless the command
    /// was reaped already; a hang-up also closes its input.
    pub fn signal(&self, signal: i32) {
        if signal == libc::SIGHUP {
            self.close_input();
        }
        let mut p = self.lock();
        match p.pid {
            Some(pid) => {
                reaper().signal_group(pid, signal);
            }
            None => p.signals.push(signal),
        }
    }

    fn resize_now(&self, p: &Process, size: TermSize) {
        let Some(master) = &p.master else { return };
        if let Err(e) = pty::resize(master, size) {
            eprintln!(
                "hearth-agent: exec {}: resizing its terminal failed: {e}",
                self.id
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, Process> {
        self.process.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry, shared by a session and its execs.
#[derive(Clone, Debug, Default)]
pub struct Running {
    execs: Arc<Mutex<HashMap<u64, Arc<Control>>>>,
}

impl Running {
    pub fn add(&self, control: Arc<Control>) {
        self.lock().insert(control.id, control);
    }

    /// Removes `control`, not a later exec the host gave the same id.
    pub fn remove(&self, control: &Arc<Control>) {
        let mut execs = self.lock();
        if execs
            .get(&control.id)
            .is_some_and(|c| Arc::ptr_eq(c, control))
        {
            execs.remove(&control.id);
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<Control>> {
        self.lock().get(&id).cloned()
    }

    /// The session ended: every exec with input gets its input closed and
    /// SIGHUP, as a terminal whose line dropped.
    pub fn hang_up_interactive(&self) {
        let interactive: Vec<Arc<Control>> = self
            .lock()
            .values()
            .filter(|c| c.input.is_some())
            .cloned()
            .collect();
        for control in interactive {
            eprintln!("hearth-agent: exec {}: hung up (its host left)", control.id);
            control.signal(libc::SIGHUP);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Control>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }
}
