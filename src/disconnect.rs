//! Why a connection ended: each reason has its close code, a short reason text sent in the
//! close frame, and a metric label. Naming them (as centrifuge's `disconnect.go` does) keeps the
//! session loop, the metrics and the logs in agreement.

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The close code of a revoked connection (the private range 4000–4999 of RFC 6455).
pub const REVOKED: u16 = 4001;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The instance is shutting down: 1001, the client should reconnect (elsewhere).
    Shutdown,
    /// The client did not read fast enough and its outbound queue overflowed: 1013.
    Slow,
    /// The token's `exp` passed while the connection was open: 1008.
    TokenExpired,
    /// The client broke the WebSocket protocol (reserved bits or opcodes, an unmasked or a
    /// fragmented control frame, a continuation without a start): 1002 (RFC 6455 §7.4.1).
    ProtocolError,
    /// A text message that is not UTF-8: 1007 (RFC 6455 §8.1).
    InvalidPayload,
    /// The client sent more messages than `CLIENT_MESSAGES_PER_SEC` allows: 1008.
    MessageRate,
    /// An inbound frame or message exceeded `MAX_MESSAGE_BYTES`: 1009.
    MessageTooBig,
    /// The client sent nothing within `PONG_TIMEOUT_MS` of a ping. No close frame: the peer is
    /// presumed gone, so the socket is dropped.
    PingTimeout,
    /// The client closed the connection (close frame or EOF).
    ClientClosed,
    /// A transport or protocol error; the socket is dropped.
    Error,
    /// An operator revoked the user (`POST /api/users/{sub}/disconnect`): 4001, the client
    /// must not reconnect with the same token.
    Revoked,
    /// An operator asked the user's connections to reconnect (`"reconnect": true`): 1012;
    /// the same token may be used again.
    Reconnect,
}

impl Disconnect {
    /// The close code to send, or `None` when the socket is just dropped.
    pub fn close_code(self) -> Option<CloseCode> {
        match self {
            Disconnect::Shutdown => Some(CloseCode::Away),
            Disconnect::Slow => Some(CloseCode::Again),
            Disconnect::TokenExpired | Disconnect::MessageRate => Some(CloseCode::Policy),
            Disconnect::ProtocolError => Some(CloseCode::Protocol),
            Disconnect::InvalidPayload => Some(CloseCode::Invalid),
            Disconnect::MessageTooBig => Some(CloseCode::Size),
            Disconnect::Revoked => Some(CloseCode::Library(REVOKED)),
            Disconnect::Reconnect => Some(CloseCode::Restart),
            Disconnect::PingTimeout | Disconnect::ClientClosed | Disconnect::Error => None,
        }
    }

    /// The reason text of the close frame, and the `reason` label in logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Disconnect::Shutdown => "shutdown",
            Disconnect::Slow => "slow",
            Disconnect::TokenExpired => "token_expired",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::InvalidPayload => "invalid_payload",
            Disconnect::MessageTooBig => "message_too_big",
            Disconnect::MessageRate => "message_rate",
            Disconnect::PingTimeout => "ping_timeout",
            Disconnect::ClientClosed => "client_closed",
            Disconnect::Error => "error",
            Disconnect::Revoked => "revoked",
            Disconnect::Reconnect => "reconnect",
        }
    }

    /// Every reason, for pre-registering metric series so dashboards see zeros.
    pub const ALL: [Disconnect; 12] = [
        Disconnect::Shutdown,
        Disconnect::Slow,
        Disconnect::TokenExpired,
        Disconnect::ProtocolError,
        Disconnect::InvalidPayload,
        Disconnect::MessageTooBig,
        Disconnect::MessageRate,
        Disconnect::PingTimeout,
        Disconnect::ClientClosed,
        Disconnect::Error,
        Disconnect::Revoked,
        Disconnect::Reconnect,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        assert_eq!(u16::from(Disconnect::Shutdown.close_code().unwrap()), 1001);
        assert_eq!(u16::from(Disconnect::TokenExpired.close_code().unwrap()), 1008);
        assert_eq!(u16::from(Disconnect::MessageRate.close_code().unwrap()), 1008);
        assert_eq!(u16::from(Disconnect::ProtocolError.close_code().unwrap()), 1002);
        assert_eq!(u16::from(Disconnect::InvalidPayload.close_code().unwrap()), 1007);
        assert_eq!(u16::from(Disconnect::MessageTooBig.close_code().unwrap()), 1009);
        assert_eq!(u16::from(Disconnect::Slow.close_code().unwrap()), 1013);
        assert_eq!(u16::from(Disconnect::Revoked.close_code().unwrap()), 4001);
        assert_eq!(u16::from(Disconnect::Reconnect.close_code().unwrap()), 1012);
        assert!(Disconnect::PingTimeout.close_code().is_none());
    }
}
