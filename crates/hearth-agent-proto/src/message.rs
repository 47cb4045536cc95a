//! The messages and the version handshake.
//!
//! The guest speaks first: `hello` with the protocol version it speaks. The
//! host answers `welcome` with the version both will use, or `refused` with a
//! reason, after which it closes the channel.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL: u32 = 1;
/// The oldest protocol version this build still accepts from a peer.
pub const MIN_PROTOCOL: u32 = 1;

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
    },
    /// A chunk of a command's output. `data` is standard base64 (with
    /// padding) of the raw bytes: output need not be UTF-8, and a chunk
    /// boundary may split a character.
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
}

/// Messages the host sends to the guest agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HostMessage {
    /// The handshake succeeded; both sides speak `protocol` from now on.
    Welcome { protocol: u32 },
    /// The handshake failed; the host closes the channel after this.
    Refused { reason: String },
    /// Run `argv` directly (no shell) with `env` added to the agent's
    /// environment. The agent kills it after `timeout_ms`, if given.
    Exec {
        id: u64,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        timeout_ms: Option<u64>,
    },
}

/// Which output stream a chunk of exec output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
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
    }

    #[test]
    fn every_host_message_round_trips() {
        round_trip(HostMessage::Welcome { protocol: 1 });
        round_trip(HostMessage::Refused {
            reason: "too old".into(),
        });
        round_trip(HostMessage::Exec {
            id: u64::MAX,
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("A".into(), "b=c".into())],
            timeout_ms: Some(1500),
        });
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
        let body = br#"{"type":"welcome","protocol":1,"extra":true}"#;
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
        assert_eq!(negotiate(1, 1), Ok(1));
        assert_eq!(negotiate(1, 5), Ok(1));
        assert_eq!(negotiate(3, 1), Ok(1));
        assert_eq!(negotiate(1, 0), Err(VersionError::TooOld { peer: 0 }));
    }

    #[test]
    fn output_data_survives_non_utf8_bytes() {
        let raw = [0xc3, 0x28, 0xff, b'\n'];
        assert_eq!(decode_data(&encode_data(&raw)).unwrap(), raw);
        assert!(decode_data("not base64!").is_err());
    }
}
