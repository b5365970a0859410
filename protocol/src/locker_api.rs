//! The locker agent's HTTP API (seed "HTTP (Locker Agent)"), request and response bodies.
//!
//! | route | request | success body |
//! |---|---|---|
//! | `POST /api/cells/sync` | [`CellsSyncRequest`] | [`CellsSyncResponse`] |
//! | `POST /api/cells/open` | [`CellsOpenRequest`] | [`CellsOpenResponse`] |
//! | `POST /api/cells/close` | [`CellsCloseRequest`] | [`CellsCloseResponse`] |
//! | `POST /api/qr/scan` | [`QrScanRequest`] | [`QrScanResponse`] |
//! | `GET /health` | — | [`HealthResponse`] |
//!
//! Every failure answers with the seed's standard error body, [`ApiErrorResponse`]
//! (`{"success": false, "data": null, "error": {"code", "message"}}`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Replaces the whole cell UUID ↔ number mapping (the backend owns the UUIDs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellsSyncRequest {
    pub cells: Vec<CellMapping>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellMapping {
    pub cell_uuid: Uuid,
    /// The number the lock board knows the cell by (`OPEN_<n>`), 1-based.
    pub cell_id: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<CellSize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellSize {
    Small,
    Medium,
    Large,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellsSyncResponse {
    pub success: bool,
    /// How many cells the mapping now holds.
    pub synced: u32,
}

/// Seed body: open a cell for a delivery (`delivery_id`) or for a technician (none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellsOpenRequest {
    pub cell_uuid: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<Uuid>,
}

/// Seed body: which cell number opened, and when the board confirmed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellsOpenResponse {
    pub success: bool,
    pub cell_id: u16,
    pub opened_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellsCloseRequest {
    pub cell_uuid: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellsCloseResponse {
    pub success: bool,
    pub cell_id: u16,
    pub closed_at: DateTime<Utc>,
}

/// A QR code read by something other than the locker's own camera (a hand scanner, a test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QrScanRequest {
    pub qr_data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QrScanResponse {
    pub success: bool,
    pub cell_id: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    pub opened_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    pub status: HealthStatus,
    pub version: String,
    pub board: ComponentHealth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<ComponentHealth>,
    pub cloud: ComponentHealth,
    pub cells: u32,
    /// The locker's own records (the cell state file, the event outbox): not ok while a write
    /// fails. Optional so a backend built before it still parses the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ComponentHealth>,
    /// Cells a technician has to look at (a jammed bolt, contents unknown), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_of_service: Vec<CellOutOfService>,
}

/// One cell out of service, in `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellOutOfService {
    pub cell_id: u16,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentHealth {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The seed's standard error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorResponse {
    /// Always `false`.
    pub success: bool,
    /// Always `null`.
    pub data: Option<serde_json::Value>,
    pub error: ApiError,
}

impl ApiErrorResponse {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            success: false,
            data: None,
            error: ApiError {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// SCREAMING_SNAKE_CASE, e.g. `ORDER_NOT_FOUND`, `CELL_NOT_FOUND` (see [`crate::error::codes`]).
    pub code: String,
    pub message: String,
}

/// The seed's gRPC `CellOpenRequest` as JSON: what the backend knows when it asks for a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpcCellOpenRequest {
    pub delivery_id: Uuid,
    pub parcel_automat_id: Uuid,
    pub cell_type: GrpcCellType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GrpcCellType {
    CellTypeUnspecified,
    CellTypeSmall,
    CellTypeMedium,
    CellTypeLarge,
}
