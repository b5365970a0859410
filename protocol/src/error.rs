//! Parse errors, and the error codes the suite puts on the wire.

/// Why a frame could not be read. Every variant names what was wrong: the limit, the type, or the
/// field's path inside the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("not valid JSON at line {line}, column {column}: {reason}")]
    Malformed {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("message has no `{0}` field")]
    MissingField(&'static str),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("`{kind}` message: {path}: {reason}")]
    Field {
        kind: String,
        path: String,
        reason: String,
    },
}

impl ProtocolError {
    pub(crate) fn from_json(e: serde_json::Error) -> Self {
        ProtocolError::Malformed {
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        }
    }

    /// The wire error code for this failure (for an `error` reply).
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::TooLarge { .. } => codes::MESSAGE_TOO_LARGE,
            ProtocolError::Malformed { .. } => codes::MALFORMED_JSON,
            ProtocolError::MissingField(_) => codes::MALFORMED_MESSAGE,
            ProtocolError::UnknownType(_) => codes::UNKNOWN_MESSAGE_TYPE,
            ProtocolError::Field { .. } => codes::INVALID_PAYLOAD,
        }
    }
}

/// Error codes used in `error` messages and in the HTTP API's error body.
pub mod codes {
    pub const MESSAGE_TOO_LARGE: &str = "MESSAGE_TOO_LARGE";
    pub const MALFORMED_JSON: &str = "MALFORMED_JSON";
    pub const MALFORMED_MESSAGE: &str = "MALFORMED_MESSAGE";
    pub const UNKNOWN_MESSAGE_TYPE: &str = "UNKNOWN_MESSAGE_TYPE";
    pub const INVALID_PAYLOAD: &str = "INVALID_PAYLOAD";
    pub const UNEXPECTED_MESSAGE: &str = "UNEXPECTED_MESSAGE";
    pub const COMMAND_REJECTED: &str = "COMMAND_REJECTED";
    pub const TASK_REJECTED: &str = "TASK_REJECTED";
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    pub const AGENT_OFFLINE: &str = "AGENT_OFFLINE";
    pub const UNKNOWN_AGENT: &str = "UNKNOWN_AGENT";
    pub const TIMEOUT: &str = "TIMEOUT";
    pub const CELL_NOT_FOUND: &str = "CELL_NOT_FOUND";
    pub const CELL_BUSY: &str = "CELL_BUSY";
    pub const CELL_OCCUPIED: &str = "CELL_OCCUPIED";
    pub const BOARD_UNAVAILABLE: &str = "BOARD_UNAVAILABLE";
    pub const BOARD_ERROR: &str = "BOARD_ERROR";
    pub const QR_INVALID: &str = "QR_INVALID";
    pub const QR_ALREADY_USED: &str = "QR_ALREADY_USED";
    pub const INTERNAL: &str = "INTERNAL";
}
