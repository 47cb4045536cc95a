//! The messages and the version handshake.
//!
//! The guest speaks first: `hello` with the protocol version it speaks. The
//! host answers `welcome` with the version both will use, or `refused` with a
//! reason, after which it closes the channel.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
pub use hearth_types::guest::Stream;
pub use hearth_types::guest::TermSize;
use hearth_types::guest::{BootReport, CaptureSpec, ExitStatus, GuestConfig, ServiceSpec};
use serde::{Deserialize, Serialize};

pub use crate::captured::CapturedFile;

/// The protocol version this build speaks. Version 2 keeps one connection
/// per VM: records with sequence numbers and acks, configuration, files.
/// Version 3 adds input to execs: `exec`'s `stdin` and `size`, and
/// `exec_input`, `exec_input_end`, `exec_resize` and `exec_signal`, and the
/// agent's `exec_input_written` (input flow control). A host
/// sends none of those to an agent that chose version 2, so on the wire a
/// version 2 exec is unchanged.
/// Version 4 adds the host's clock (`time`) and TCP streams carried over
/// the channel (`port_*`): host to guest port, and guest loopback
/// listeners whose connections come to the host. A host sends neither to
/// an agent that chose an older version.
/// Version 5 adds credential capture: `capture_watch` and `capture_stop`
/// from the host, `captured` and `capture_failed` from the agent. A host
/// sends neither to an agent that chose an older version.
/// Version 6 adds `restored`: the host's first words to a guest restored
/// from a snapshot (entropy, a new identity), before its configuration.
pub const PROTOCOL: u32 = 6;
/// The first version with `restored`.
pub const RESTORE_PROTOCOL: u32 = 6;
/// The first version with `time` and the `port_*` messages.
pub const PORTS_PROTOCOL: u32 = 4;
/// The first version with the `capture_*` messages.
pub const CAPTURE_PROTOCOL: u32 = 5;
/// Bytes of one port stream, in each direction, that a side may have sent
/// and not yet seen acknowledged (`port_ack`): the receiver takes them off
/// the channel at once, so a stream whose reader is slow never stalls the
/// others on the same channel.
pub const PORT_WINDOW: u64 = 256 * 1024;
/// Raw bytes per `port_data` message (its base64 stays far below a frame).
pub const PORT_CHUNK: usize = 64 * 1024;
/// Ids of port streams the guest opens (a connection to one of its
/// loopback listeners) have this bit set; the host's never do, so the two
/// sides never pick the same id.
pub const GUEST_STREAM_BIT: u64 = 1 << 63;
/// Bytes of one exec's input the host may have sent and not yet seen in
/// an `exec_input_written` (version 3): flow control for input. The agent
/// queues more than this, so a host that keeps to it never loses input.
pub const INPUT_WINDOW: u64 = 256 * 1024;
/// The oldest protocol version this build still accepts from a peer.
pub const MIN_PROTOCOL: u32 = 2;

/// Messages the guest agent sends to the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestMessage {
    /// The first message on a channel.
    Hello {
        protocol: u32,
        agent_version: String,
        /// `/proc/sys/kernel/random/boot_id`: tells one boot from the next.
        boot_id: String,
        /// Random per agent process: record sequence numbers start over at
        /// 1 with each instance, so acks are kept per instance.
        instance: String,
        /// Kernel uptime (CLOCK_BOOTTIME) now, ms: lets the host turn the
        /// `uptime_ms` of records into wall-clock times.
        uptime_ms: u64,
    },
    /// Something the host must not lose. Kept by the agent until acked and
    /// sent again, in order, after a reconnect; the host ignores a `seq` it
    /// already stored.
    Record { seq: u64, record: Record },
    /// Sent every few seconds while connected: the agent is alive.
    Heartbeat { uptime_ms: u64 },
    /// A chunk of a command's output. `data` is standard base64 (with
    /// padding) of the raw bytes: output need not be UTF-8, and a chunk
    /// boundary may split a character. With a TTY everything is `stdout`.
    ExecOutput {
        id: u64,
        stream: Stream,
        data: String,
    },
    /// The command ended. `code` is set when it exited, `signal` when a
    /// signal killed it; `timed_out` says the agent killed it at its deadline.
    ExecExit {
        id: u64,
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
    /// The command could not be started (not found, not executable, ...).
    ExecError { id: u64, message: String },
    /// `bytes` more bytes of exec `id`'s input are gone from the agent's
    /// queue: written to the command, or discarded because its input was
    /// closed (version 3). The host keeps at most [`INPUT_WINDOW`] bytes of
    /// an exec's input sent and not yet reported this way, so the agent's
    /// queue never overflows and no input is lost.
    ExecInputWritten { id: u64, bytes: u64 },
    /// A chunk of a file the host asked for with `file_read` (base64).
    FileChunk { id: u64, data: String },
    /// A transfer ended well: the whole file's size and SHA-256 (hex). For
    /// a `file_write` it is sent once the file is in place.
    FileDone { id: u64, size: u64, sha256: String },
    /// A transfer failed (no such file, too big, checksum mismatch, ...);
    /// a partly written file is removed.
    FileError { id: u64, message: String },
    /// The host's `port_connect` reached a listener (version 4).
    PortConnected { id: u64 },
    /// The host's `port_connect` failed: nothing listens there, or the
    /// connect failed otherwise (the system's words). The id is done.
    PortRefused { id: u64, message: String },
    /// A guest program connected to the loopback listener the host asked
    /// for on `port`; the stream `id` (with [`GUEST_STREAM_BIT`]) is open.
    PortAccepted { id: u64, port: u16 },
    /// A `port_listen` could not be carried out (port in use, ...).
    PortListenFailed { port: u16, message: String },
    /// Bytes the guest end of stream `id` sent (base64).
    PortData { id: u64, data: String },
    /// The guest end sent everything it will: no more `port_data`.
    PortEnd { id: u64 },
    /// `bytes` more of the host's data for stream `id` were written to the
    /// guest end: the host may send that many more.
    PortAck { id: u64, bytes: u64 },
    /// Stream `id` is over (both ends done, or `message` says what broke
    /// it); nothing more is sent for it either way.
    PortClosed { id: u64, message: Option<String> },
    /// The files of watch `id`, complete and unchanged for its
    /// `stable_ms` (version 5). Live, never a record: not journaled, never
    /// sent again after a reconnect unless the host asks again. Its
    /// `Debug` shows no content.
    Captured { id: u64, files: Vec<CapturedFile> },
    /// Watch `id` cannot deliver (a bad spec, a file over the limit, ...);
    /// the agent's words, never a file's content (version 5).
    CaptureFailed { id: u64, message: String },
}

/// Messages the host sends to the guest agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostMessage {
    /// The handshake succeeded; both sides speak `protocol` from now on.
    /// `acked` is the highest record `seq` of the hello's `instance` the
    /// host has stored (0: none); the agent drops those and sends the rest.
    Welcome { protocol: u32, acked: u64 },
    /// The handshake failed; the host closes the channel after this.
    Refused { reason: String },
    /// The host stored every record up to and including `seq`.
    Ack { seq: u64 },
    /// The VM's configuration. Sent after every welcome; an agent applies
    /// the first it gets and answers later ones with nothing (the same
    /// boot keeps its configuration).
    Config { config: GuestConfig },
    /// Run `argv` directly (no shell) with `env` added to the agent's
    /// environment. The agent kills it after `timeout_ms`, if given. With
    /// `tty` it runs on a new pseudo-terminal (stdout and stderr merged) of
    /// `size` (default 24x80). Its stdin is empty unless `stdin` (version
    /// 3) is set: then `exec_input` feeds it (the terminal, with `tty`)
    /// until `exec_input_end`.
    Exec {
        id: u64,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        timeout_ms: Option<u64>,
        tty: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        stdin: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<TermSize>,
    },
    /// Bytes (base64) for the stdin or terminal of exec `id` (version 3).
    /// Input for an exec that ended or has no stdin is dropped.
    ExecInput { id: u64, data: String },
    /// No more input for exec `id`: its stdin pipe is closed; on a
    /// terminal the end-of-file character is typed (version 3).
    ExecInputEnd { id: u64 },
    /// The terminal of exec `id` has a new size; its foreground process
    /// group gets SIGWINCH from the kernel (version 3).
    ExecResize { id: u64, size: TermSize },
    /// Send signal number `signal` to the process group of exec `id`
    /// (version 3). A hang-up (1) also closes its input.
    ExecSignal { id: u64, signal: i32 },
    /// Send the file at `path` (chunks, then `file_done`), or `file_error`
    /// when it is not a regular file or is larger than `max_bytes`.
    FileRead {
        id: u64,
        path: String,
        max_bytes: u64,
    },
    /// Write `size` bytes to `path` (mode `mode`), sent next as chunks and
    /// closed by `file_end`. The agent writes a temporary file beside it
    /// and renames it into place once the checksum matches.
    FileWrite {
        id: u64,
        path: String,
        size: u64,
        mode: u32,
    },
    /// A chunk of a `file_write` (base64).
    FileChunk { id: u64, data: String },
    /// The end of a `file_write`: the SHA-256 (hex) of all chunks.
    FileEnd { id: u64, sha256: String },
    /// The host's clock, Unix time in ms (version 4): sent right after the
    /// welcome and again every little while. An agent that keeps the
    /// guest's clock sets it from this.
    Time { unix_ms: u64 },
    /// Open stream `id` to TCP `port` on the guest's loopback (version 4);
    /// answered by `port_connected` or `port_refused`.
    PortConnect { id: u64, port: u16 },
    /// Listen on the guest's loopback at `port`; each connection a guest
    /// program makes there comes to the host as `port_accepted`. Asked
    /// again after each welcome: listeners end with the connection.
    PortListen { port: u16 },
    /// Bytes for the guest end of stream `id` (base64).
    PortData { id: u64, data: String },
    /// No more data from the host for stream `id` (the guest end's write
    /// side is shut down).
    PortEnd { id: u64 },
    /// The host took `bytes` more of stream `id`'s data off the channel.
    PortAck { id: u64, bytes: u64 },
    /// Abort stream `id`: both directions, at once.
    PortClose { id: u64 },
    /// Watch the files of `spec` and send them as one `captured` once
    /// complete and stable, and again whenever they become a different
    /// complete set (version 5). Sent again after each welcome while its
    /// owner lives: a watch already running keeps running, and its current
    /// complete set, if it has one, is sent again.
    CaptureWatch { id: u64, spec: CaptureSpec },
    /// Stop watch `id` (version 5).
    CaptureStop { id: u64 },
    /// This guest was restored from a snapshot (version 6): reseed the
    /// kernel's random generator from `seed`, take `hostname` and
    /// `machine_id` (32 lowercase hex digits), send a fresh boot report,
    /// and take the next `config` as this VM's own. Sent after each
    /// welcome, after `time` and before `config`; an agent that already
    /// has `machine_id` only reseeds.
    Restored {
        seed: crate::Seed,
        hostname: String,
        machine_id: String,
    },
}

/// What the agent records: service lifecycles and output, readiness and
/// the boot report. `uptime_ms` is the kernel's uptime when it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    /// The configuration was applied; `services` are the ones supervised
    /// (the image's and the VM's).
    ConfigApplied {
        uptime_ms: u64,
        services: Vec<ServiceSpec>,
    },
    /// A part of the configuration could not be applied.
    ConfigFailed {
        uptime_ms: u64,
        message: String,
    },
    ServiceStarted {
        uptime_ms: u64,
        service: String,
        pid: u32,
        /// 1 for the first start, 2 for the first restart, ...
        attempt: u32,
    },
    /// The service could not be started at all (no such program, no such
    /// user, ...).
    ServiceSpawnFailed {
        uptime_ms: u64,
        service: String,
        message: String,
    },
    /// One line of a service's output, without its newline; invalid UTF-8
    /// replaced; lines over 16 KiB cut there.
    ServiceLog {
        uptime_ms: u64,
        service: String,
        stream: Stream,
        line: String,
    },
    /// Lines the agent dropped because the host was away too long and its
    /// buffer was full.
    LinesDropped {
        uptime_ms: u64,
        service: String,
        count: u64,
    },
    /// Its readiness check passed (or it has none and started).
    ServiceReady {
        uptime_ms: u64,
        service: String,
    },
    ServiceExited {
        uptime_ms: u64,
        service: String,
        status: ExitStatus,
        /// Restarts so far.
        restarts: u32,
        /// When it will be started again; `None`: it will not.
        restart_in_ms: Option<u64>,
    },
    /// `restarts` restarts within `window_secs`: the agent keeps trying,
    /// but slowly (the backoff's ceiling).
    CrashLoop {
        uptime_ms: u64,
        service: String,
        restarts: u32,
        window_secs: u32,
    },
    /// Every service's readiness check passed: the VM is ready.
    Ready {
        uptime_ms: u64,
    },
    BootReport {
        uptime_ms: u64,
        report: BootReport,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("the peer speaks protocol {peer}, older than the oldest supported ({min})", min = MIN_PROTOCOL)]
    TooOld { peer: u32 },
}

/// The protocol version both sides use: the lower of the two, as long as
/// this side still supports it.
pub fn negotiate(host: u32, guest: u32) -> Result<u32, VersionError> {
    let chosen = host.min(guest);
    if chosen < MIN_PROTOCOL {
        return Err(VersionError::TooOld { peer: chosen });
    }
    Ok(chosen)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Encodes raw output bytes for [`GuestMessage::ExecOutput`].
pub fn encode_data(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes the `data` of [`GuestMessage::ExecOutput`].
pub fn decode_data(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(data)
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::{read_frame, write_frame, FrameError};

    fn round_trip<M>(msg: M)
    where
        M: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let mut bytes = Vec::new();
        write_frame(&mut bytes, &msg).unwrap();
        let back: Option<M> = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(back, Some(msg));
    }

    #[test]
    fn every_guest_message_round_trips() {
        round_trip(GuestMessage::Hello {
            protocol: PROTOCOL,
            agent_version: "0.1.0".into(),
            boot_id: "b7c2".into(),
            instance: "9f3a".into(),
            uptime_ms: 812,
        });
        round_trip(GuestMessage::Record {
            seq: 3,
            record: Record::ServiceExited {
                uptime_ms: 900,
                service: "web".into(),
                status: ExitStatus {
                    code: None,
                    signal: Some(4),
                },
                restarts: 2,
                restart_in_ms: Some(400),
            },
        });
        round_trip(GuestMessage::Record {
            seq: 4,
            record: Record::BootReport {
                uptime_ms: 950,
                report: BootReport::default(),
            },
        });
        round_trip(GuestMessage::Heartbeat { uptime_ms: 5000 });
        round_trip(GuestMessage::FileDone {
            id: 2,
            size: 3,
            sha256: "ab".into(),
        });
        round_trip(GuestMessage::ExecOutput {
            id: 7,
            stream: Stream::Stderr,
            data: encode_data(&[0xff, 0, b'a']),
        });
        round_trip(GuestMessage::ExecExit {
            id: 7,
            code: None,
            signal: Some(9),
            timed_out: true,
        });
        round_trip(GuestMessage::ExecError {
            id: 7,
            message: "not found".into(),
        });
        round_trip(GuestMessage::ExecInputWritten { id: 7, bytes: 4096 });
        let guest_id = GUEST_STREAM_BIT | 1;
        round_trip(GuestMessage::PortConnected { id: 9 });
        round_trip(GuestMessage::PortRefused {
            id: 9,
            message: "Connection refused".into(),
        });
        round_trip(GuestMessage::PortAccepted {
            id: guest_id,
            port: 3128,
        });
        round_trip(GuestMessage::PortListenFailed {
            port: 3128,
            message: "in use".into(),
        });
        round_trip(GuestMessage::PortData {
            id: guest_id,
            data: encode_data(b"GET /"),
        });
        round_trip(GuestMessage::PortEnd { id: 9 });
        round_trip(GuestMessage::PortAck { id: 9, bytes: 5 });
        round_trip(GuestMessage::PortClosed {
            id: 9,
            message: None,
        });
        round_trip(GuestMessage::Captured {
            id: 11,
            files: vec![CapturedFile {
                path: "/home/u/.codex/auth.json".into(),
                mode: 0o600,
                data: encode_data(br#"{"tokens":{}}"#),
            }],
        });
        round_trip(GuestMessage::CaptureFailed {
            id: 11,
            message: "too big".into(),
        });
    }

    #[test]
    fn every_host_message_round_trips() {
        round_trip(HostMessage::Welcome {
            protocol: 2,
            acked: 17,
        });
        round_trip(HostMessage::Ack { seq: 18 });
        round_trip(HostMessage::Config {
            config: GuestConfig {
                hostname: Some("box".into()),
                ..Default::default()
            },
        });
        round_trip(HostMessage::FileWrite {
            id: 1,
            path: "/tmp/x".into(),
            size: 3,
            mode: 0o644,
        });
        round_trip(HostMessage::Refused {
            reason: "too old".into(),
        });
        round_trip(HostMessage::Exec {
            id: u64::MAX,
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("A".into(), "b=c".into())],
            timeout_ms: Some(1500),
            tty: false,
            stdin: false,
            size: None,
        });
        round_trip(HostMessage::Exec {
            id: 3,
            argv: vec!["sh".into()],
            env: vec![],
            timeout_ms: None,
            tty: true,
            stdin: true,
            size: Some(TermSize {
                rows: 40,
                cols: 120,
            }),
        });
        round_trip(HostMessage::ExecInput {
            id: 3,
            data: encode_data(b"ls\r"),
        });
        round_trip(HostMessage::ExecInputEnd { id: 3 });
        round_trip(HostMessage::ExecResize {
            id: 3,
            size: TermSize {
                rows: 50,
                cols: 132,
            },
        });
        round_trip(HostMessage::ExecSignal { id: 3, signal: 2 });
        round_trip(HostMessage::Time {
            unix_ms: 1_796_000_000_000,
        });
        round_trip(HostMessage::PortConnect { id: 4, port: 5900 });
        round_trip(HostMessage::PortListen { port: 3128 });
        round_trip(HostMessage::PortData {
            id: 4,
            data: encode_data(b"RFB 003.008\n"),
        });
        round_trip(HostMessage::PortEnd { id: 4 });
        round_trip(HostMessage::PortAck { id: 4, bytes: 12 });
        round_trip(HostMessage::PortClose { id: 4 });
        round_trip(HostMessage::CaptureWatch {
            id: 11,
            spec: CaptureSpec {
                files: vec![hearth_types::guest::CaptureFile {
                    path: "/home/u/.codex/auth.json".into(),
                    required_keys: vec!["/tokens/access_token".into()],
                }],
                stable_ms: 1000,
            },
        });
        round_trip(HostMessage::CaptureStop { id: 11 });
    }

    #[test]
    fn the_capture_wire_form() {
        let v = serde_json::to_value(GuestMessage::Captured {
            id: 2,
            files: vec![CapturedFile {
                path: "/a".into(),
                mode: 384,
                data: encode_data(b"x"),
            }],
        })
        .unwrap();
        let want = serde_json::json!({"type": "captured", "id": 2, "files": [{"path": "/a", "mode": 384, "data": "eA=="}]});
        assert_eq!(v, want);
        let watch =
            r#"{"type":"capture_watch","id":1,"spec":{"files":[{"path":"/a"}],"stable_ms":0}}"#;
        let HostMessage::CaptureWatch { spec, .. } = serde_json::from_str(watch).unwrap() else {
            panic!("not a capture_watch");
        };
        assert!(spec.files[0].required_keys.is_empty());
    }

    #[test]
    fn a_version_2_exec_has_the_version_2_wire_form() {
        let v = serde_json::to_value(HostMessage::Exec {
            id: 1,
            argv: vec!["true".into()],
            env: vec![],
            timeout_ms: None,
            tty: false,
            stdin: false,
            size: None,
        })
        .unwrap();
        let want = serde_json::json!({"type": "exec", "id": 1, "argv": ["true"], "env": [], "timeout_ms": null, "tty": false});
        assert_eq!(v, want);
    }

    #[test]
    fn the_wire_form_is_tagged_snake_case() {
        let v = serde_json::to_value(GuestMessage::ExecOutput {
            id: 1,
            stream: Stream::Stdout,
            data: encode_data(b"out\n"),
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "exec_output", "id": 1, "stream": "stdout", "data": "b3V0Cg=="})
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let body = br#"{"type":"welcome","protocol":2,"acked":0,"extra":true}"#;
        let err = serde_json::from_slice::<HostMessage>(body).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn unknown_message_types_are_refused() {
        let body = br#"{"type":"launch_missiles"}"#;
        assert!(serde_json::from_slice::<HostMessage>(body).is_err());
    }

    #[test]
    fn a_guest_message_is_not_read_as_a_host_message() {
        let mut bytes = Vec::new();
        write_frame(
            &mut bytes,
            &GuestMessage::ExecError {
                id: 1,
                message: "x".into(),
            },
        )
        .unwrap();
        let err = read_frame::<_, HostMessage>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)));
    }

    #[test]
    fn negotiation_picks_the_lower_supported_version() {
        assert_eq!(negotiate(2, 2), Ok(2));
        assert_eq!(negotiate(2, 5), Ok(2));
        assert_eq!(negotiate(3, 2), Ok(2));
        assert_eq!(negotiate(2, 1), Err(VersionError::TooOld { peer: 1 }));
    }

    #[test]
    fn output_data_survives_non_utf8_bytes() {
        let raw = [0xc3, 0x28, 0xff, b'\n'];
        assert_eq!(decode_data(&encode_data(&raw)).unwrap(), raw);
        assert!(decode_data("not base64!").is_err());
    }
}
