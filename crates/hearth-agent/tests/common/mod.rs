//! A test-side host for the real agent binary: it listens on a Unix socket,
//! starts `hearth-agent --connect unix:PATH`, and speaks the protocol with
//! `hearth-agent-proto`, as the real host does.
#![allow(dead_code)]

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_agent_proto::{
    decode_data, encode_data, read_frame, write_frame, GuestMessage, HostMessage, Record, Stream,
    PROTOCOL,
};
use hearth_types::guest::{GuestConfig, TermSize};

/// How long any single wait of a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A running agent and the socket it connects to; the agent is killed on drop.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub listener: UnixListener,
    child: Child,
    /// The programs it finds, when limited.
    bin: Option<tempfile::TempDir>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("the agent's log:\n{}", self.log());
        }
    }
}

impl Agent {
    /// Starts the agent with `extra` arguments; its image config, run dir
    /// and console are files in its temporary directory.
    pub fn start(extra: &[&str]) -> Agent {
        Self::start_with_image_config(None, extra)
    }

    /// As [`Agent::start`], with `image_config` as its agent.json.
    pub fn start_with_image_config(image_config: Option<&str>, extra: &[&str]) -> Agent {
        Self::launch(image_config, extra, &[])
    }

    /// As [`Agent::start`], finding programs only among `programs` (so
    /// this host's systemctl, say, is not found).
    pub fn start_with_programs(programs: &[&str]) -> Agent {
        let bin = tempfile::tempdir().unwrap();
        for program in programs {
            let target = Path::new("/usr/bin").join(program);
            std::os::unix::fs::symlink(target, bin.path().join(program)).unwrap();
        }
        let mut agent = Self::launch(None, &[], &[("PATH", bin.path().to_str().unwrap())]);
        agent.bin = Some(bin);
        agent
    }

    fn launch(image_config: Option<&str>, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::File::create(dir.path().join("console")).unwrap();
        if let Some(text) = image_config {
            std::fs::write(dir.path().join("agent.json"), text).unwrap();
        }
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let target = format!("unix:{}", socket.display());
        let child = Command::new(env!("CARGO_BIN_EXE_hearth-agent"))
            .args(["--connect", &target])
            .arg("--config")
            .arg(dir.path().join("agent.json"))
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .arg("--console")
            .arg(dir.path().join("console"))
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .expect("the agent starts");
        Agent {
            dir,
            listener,
            child,
            bin: None,
        }
    }

    /// What the agent wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Accepts the agent's next connection and reads its hello.
    pub fn accept(&self) -> Host {
        let (stream, _) = self.listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        let mut host = Host { stream };
        let hello = host.recv();
        let GuestMessage::Hello {
            protocol, instance, ..
        } = hello
        else {
            panic!("expected hello, got {hello:?}");
        };
        assert_eq!(protocol, PROTOCOL);
        assert!(!instance.is_empty());
        host
    }

    /// Accepts, welcomes with `acked`, returns the connection.
    pub fn connect(&self, acked: u64) -> Host {
        let mut host = self.accept();
        host.send(&HostMessage::Welcome {
            protocol: PROTOCOL,
            acked,
        });
        host
    }
}

/// One connection from the agent.
pub struct Host {
    pub stream: UnixStream,
}

impl Host {
    pub fn send(&mut self, msg: &HostMessage) {
        write_frame(&mut self.stream, msg).expect("the message is sent");
    }

    pub fn recv(&mut self) -> GuestMessage {
        read_frame(&mut self.stream)
            .expect("a frame from the agent")
            .expect("the agent hung up")
    }

    /// The next message that is not a heartbeat.
    pub fn next(&mut self) -> GuestMessage {
        loop {
            match self.recv() {
                GuestMessage::Heartbeat { .. } => {}
                other => return other,
            }
        }
    }

    pub fn exec(&mut self, id: u64, argv: &[&str], tty: bool) {
        self.send(&HostMessage::Exec {
            id,
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            timeout_ms: Some(10_000),
            tty,
            stdin: false,
            size: None,
        });
    }

    /// An exec whose input the host sends (`stdin`), on a terminal of
    /// `size` when given.
    pub fn interactive(&mut self, id: u64, argv: &[&str], size: Option<(u16, u16)>) {
        self.send(&HostMessage::Exec {
            id,
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            timeout_ms: Some(20_000),
            tty: size.is_some(),
            stdin: true,
            size: size.map(|(rows, cols)| TermSize { rows, cols }),
        });
    }

    pub fn input(&mut self, id: u64, bytes: &[u8]) {
        let data = encode_data(bytes);
        self.send(&HostMessage::ExecInput { id, data });
    }

    pub fn input_end(&mut self, id: u64) {
        self.send(&HostMessage::ExecInputEnd { id });
    }

    /// The stdout of exec `id` until it contains `marker` (which must come
    /// before the exec ends).
    pub fn output_until(&mut self, id: u64, marker: &str) -> String {
        let mut out = Vec::new();
        while !String::from_utf8_lossy(&out).contains(marker) {
            match self.recv() {
                GuestMessage::ExecOutput { id: i, data, .. } if i == id => {
                    out.extend(decode_data(&data).unwrap())
                }
                m @ (GuestMessage::ExecExit { .. } | GuestMessage::ExecError { .. }) => {
                    panic!(
                        "{m:?} before {marker:?}; got {:?}",
                        String::from_utf8_lossy(&out)
                    )
                }
                _ => {}
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Stdout, stderr and the final message of exec `id`; records and
    /// heartbeats on the way are skipped.
    pub fn outcome(&mut self, id: u64) -> (String, String, GuestMessage) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.recv() {
                GuestMessage::ExecOutput {
                    id: i,
                    stream,
                    data,
                } if i == id => {
                    let buf = if stream == Stream::Stdout {
                        &mut out
                    } else {
                        &mut err
                    };
                    buf.extend(decode_data(&data).unwrap());
                }
                m @ (GuestMessage::ExecExit { id: i, .. }
                | GuestMessage::ExecError { id: i, .. })
                    if i == id =>
                {
                    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                    return (text(out), text(err), m);
                }
                _ => {}
            }
        }
    }

    /// Reads records (acking none) until `stop` says so; returns them all
    /// with their seq. Fails after `PATIENCE`.
    pub fn records_until(&mut self, mut stop: impl FnMut(&Record) -> bool) -> Vec<(u64, Record)> {
        let start = Instant::now();
        let mut got = Vec::new();
        loop {
            assert!(start.elapsed() < PATIENCE, "gave up; got {got:#?}");
            if let GuestMessage::Record { seq, record } = self.recv() {
                let done = stop(&record);
                got.push((seq, record));
                if done {
                    return got;
                }
            }
        }
    }
}

/// A configuration from JSON (the shape of agent.json).
pub fn config(json: serde_json::Value) -> GuestConfig {
    serde_json::from_value(json).expect("a valid configuration")
}

/// The lines of a service's output among `records`.
pub fn log_lines(records: &[(u64, Record)], service: &str, stream: Stream) -> Vec<String> {
    records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::ServiceLog {
                service: s,
                stream: st,
                line,
                ..
            } if s == service && *st == stream => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// Waits for `path` to exist.
pub fn wait_for_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < PATIENCE,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
