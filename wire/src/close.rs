//! Application error codes for closing a walship QUIC connection (`Connection::close`), so the
//! peer and the logs can tell why a session ended. The reason bytes carry a short human text.

/// Why a connection was closed. The numeric values are part of the protocol (spec/protocol.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// Orderly end of a session (e.g. the replica stops).
    Normal = 0,
    /// The session was refused; a `Refuse` message was sent first when possible.
    Refused = 1,
    /// The peer sent an oversized, empty or malformed frame, or a message not allowed in the
    /// current state. The connection is dropped; nothing else is affected.
    ProtocolViolation = 2,
    /// The replica halted (durable halt record written) and ends the session.
    Halted = 3,
    /// The node is shutting down.
    ShuttingDown = 4,
}

impl CloseCode {
    /// The QUIC application error code.
    pub fn code(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    /// The close code for a QUIC application error code, if it is one of ours.
    pub fn from_code(code: quinn::VarInt) -> Option<CloseCode> {
        match code.into_inner() {
            0 => Some(CloseCode::Normal),
            1 => Some(CloseCode::Refused),
            2 => Some(CloseCode::ProtocolViolation),
            3 => Some(CloseCode::Halted),
            4 => Some(CloseCode::ShuttingDown),
            _ => None,
        }
    }

    /// Closes `conn` with this code and `reason` (truncated to 256 bytes), logging it.
    pub fn close(self, conn: &quinn::Connection, reason: &str) {
        let mut end = reason.len().min(256);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        tracing::info!(code = ?self, peer = %conn.remote_address(), reason, "closing connection");
        conn.close(self.code(), &reason.as_bytes()[..end]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_code_round_trips_through_its_number() {
        for c in [
            CloseCode::Normal,
            CloseCode::Refused,
            CloseCode::ProtocolViolation,
            CloseCode::Halted,
            CloseCode::ShuttingDown,
        ] {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::from_code(quinn::VarInt::from_u32(99)), None);
    }
}
