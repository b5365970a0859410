//! How a refused operation is told: [`ApiFailure`] (HTTP status, wire code, words), shared by
//! the HTTP API ([`crate::api`]) and the link's `locker_request` answers, and how cell-store and
//! board errors map onto it.

use crate::cells::CellError;
use hal::lockboard::BoardError;
use protocol::error::codes;

/// A refused operation: HTTP status, wire error code, words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiFailure {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

/// Codes the protocol crate does not name (locker-only).
pub mod extra_codes {
    pub const CELL_EMPTY: &str = "CELL_EMPTY";
    pub const CELL_OUT_OF_SERVICE: &str = "CELL_OUT_OF_SERVICE";
    pub const DOOR_OPEN: &str = "DOOR_OPEN";
    pub const VALIDATION_UNAVAILABLE: &str = "VALIDATION_UNAVAILABLE";
    /// The locker cannot record what it does (full or failing disk): it opens nothing.
    pub const STORAGE_FAILED: &str = "STORAGE_FAILED";
    /// Too many failed QR scans from one source: it is backing off.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
}

impl From<CellError> for ApiFailure {
    fn from(e: CellError) -> Self {
        let (status, code) = match &e {
            CellError::NotFound(_) => (404, codes::CELL_NOT_FOUND),
            CellError::Busy { .. } => (409, codes::CELL_BUSY),
            CellError::Occupied { .. } | CellError::WouldOrphan { .. } => {
                (409, codes::CELL_OCCUPIED)
            }
            CellError::NoParcel { .. } => (409, extra_codes::CELL_EMPTY),
            CellError::OutOfService { .. } => (409, extra_codes::CELL_OUT_OF_SERVICE),
            CellError::BadMapping(_) => (400, codes::INVALID_PAYLOAD),
            CellError::CodeUsed => (409, codes::QR_ALREADY_USED),
            CellError::Persist { .. } | CellError::Missing { .. } => {
                (503, extra_codes::STORAGE_FAILED)
            }
        };
        ApiFailure::new(status, code, e.to_string())
    }
}

pub(crate) fn board_failure(e: &BoardError) -> ApiFailure {
    match e {
        BoardError::Refused {
            code: protocol::lockboard::BoardErrorCode::DoorOpen,
            ..
        } => ApiFailure::new(409, extra_codes::DOOR_OPEN, e.to_string()),
        BoardError::Refused { .. } | BoardError::Unexpected { .. } => {
            ApiFailure::new(502, codes::BOARD_ERROR, e.to_string())
        }
        _ => ApiFailure::new(503, codes::BOARD_UNAVAILABLE, e.to_string()),
    }
}

/// Whether a failed command may still have moved the bolt (only `STATUS` can tell).
pub(crate) fn uncertain(e: &BoardError) -> bool {
    matches!(
        e,
        BoardError::Timeout { .. } | BoardError::Reset { .. } | BoardError::Disconnected { .. }
    )
}

/// The board's own word that a bolt is stuck.
pub(crate) fn jammed(e: &BoardError) -> bool {
    matches!(
        e,
        BoardError::Refused {
            code: protocol::lockboard::BoardErrorCode::Jammed,
            ..
        }
    )
}
