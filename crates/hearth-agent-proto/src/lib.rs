//! The wire protocol between hearth on the host and `hearth-agent` in the
//! guest. Both sides link this crate, so the two ends cannot drift apart.
//!
//! A frame is a `u32` little-endian byte count followed by that many bytes of
//! JSON. Frames above [`MAX_FRAME`] are refused before anything is allocated.
//! Every message is a JSON object with a `type` field naming its kind; unknown
//! fields are errors, not silently dropped. The I/O is blocking and works on
//! any `Read`/`Write`, which is what a virtio-serial port in the guest is.

mod captured;
mod frame;
mod message;
mod seed;

pub use frame::{read_frame, redacted, to_wiped_json, write_frame, FrameError, MAX_FRAME};
pub use message::{
    decode_data, encode_data, negotiate, CapturedFile, GuestMessage, HostMessage, Record, Stream,
    VersionError, CAPTURE_PROTOCOL, GUEST_STREAM_BIT, INPUT_WINDOW, MIN_PROTOCOL, PORTS_PROTOCOL,
    PORT_CHUNK, PORT_WINDOW, PROTOCOL, RESTORE_PROTOCOL,
};
pub use seed::{Seed, SEED_BYTES};

/// The vsock port the agent listens on under Firecracker (the first port
/// above the privileged range, 0-1023); the host sends `CONNECT 1024`.
pub const AGENT_VSOCK_PORT: u32 = 1024;
