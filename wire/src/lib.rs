//! walship-wire: what primary and replica say to each other, how it is framed, and how the
//! QUIC + mutual-TLS connection carrying it is set up.
//!
//! Owns: the [`message::Message`] enum and its bincode 2 body encoding, the length-prefixed frame
//! codec with its hard size limit ([`frame`]), the protocol version and ALPN, the TLS rules
//! (cluster CA + member names, [`tls`]), quinn endpoint helpers ([`endpoint`]), development
//! certificates ([`certs`]) and the drivers' way to block without stalling a tokio worker
//! ([`blocking`]). Does not own: what the messages mean to the state machines
//! (walship-primary / walship-replica), the record layout (walship-wal), the snapshot format
//! (walship-snapshot). The byte-level description is in `spec/protocol.md`.
//!
//! ```
//! use walship_wire::frame::{encode_frame, FrameDecoder};
//! use walship_wire::message::Message;
//!
//! let mut bytes = Vec::new();
//! encode_frame(&Message::Commit { commit_lsn: 42 }, &mut bytes).expect("encodes");
//! let mut decoder = FrameDecoder::default();
//! for chunk in bytes.chunks(3) {
//!     decoder.push(chunk).expect("valid prefix");
//! }
//! assert_eq!(decoder.next_message().expect("valid frame"), Some(Message::Commit { commit_lsn: 42 }));
//! ```

#![warn(missing_docs)]

pub mod blocking;
pub mod certs;
pub mod close;
pub mod endpoint;
pub mod frame;
pub mod message;
pub mod stream;
pub mod tls;

pub use certs::{generate, CertError, GeneratedCerts, TlsFiles, TlsMaterial};
pub use close::CloseCode;
pub use endpoint::{client_endpoint, connect, server_endpoint, EndpointError, TransportOptions};
pub use frame::{encode_frame, FrameDecoder, FrameError, MAX_BATCH_BYTES, MAX_FRAME_BYTES};
pub use message::{
    Hello, Message, RecordBatch, Refuse, RefuseReason, Welcome, ALPN, PROTOCOL_VERSION,
};
pub use stream::{read_frame, write_frame, FrameWriter};
pub use tls::{cert_member_name, peer_node_id, CertNameError, TlsError, ANY_MEMBER};
