//! The locker's HTTP call to the orchestrator: QR validation, as the seed's locker did it
//! (`OrchestratorAPIClient.ValidateQR()`). The seed names the call but not its route or bodies;
//! ours follow the seed's standard response format (`success`, `data`, `error`):
//!
//! ```text
//! POST <orchestrator url>            (e.g. /api/v1/qr/validate), Authorization: Bearer <token>
//! {"locker_id": "<uuid>", "qr_data": "<what the camera read>"}
//! 200 {"success": true, "data": {"valid": true, "cell_uuid": "…", "order_id": "…"}, "error": null}
//! 200 {"success": true, "data": {"valid": false, "reason": "This code has expired"}, "error": null}
//! 4xx {"success": false, "data": null, "error": {"code": "ORDER_NOT_FOUND", "message": "…"}}
//! ```

use crate::locker_api::ApiError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidateRequest {
    pub locker_id: Uuid,
    pub qr_data: String,
}

/// `data` of a successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidateData {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_uuid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The seed's standard response envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidateResponse {
    pub success: bool,
    #[serde(default)]
    pub data: Option<ValidateData>,
    #[serde(default)]
    pub error: Option<ApiError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_bodies_parse_and_round_trip() {
        let ok = r#"{"success": true, "data": {"valid": true, "cell_uuid": "5f0c7a8e-3b1d-4c2a-9e6f-1a2b3c4d5e6f", "order_id": "1a2b3c4d-3b1d-4c2a-9e6f-5f0c7a8e0000"}, "error": null}"#;
        let no = r#"{"success": true, "data": {"valid": false, "reason": "This code has expired"}, "error": null}"#;
        let err = r#"{"success": false, "data": null, "error": {"code": "ORDER_NOT_FOUND", "message": "no such order"}}"#;
        for text in [ok, no, err] {
            let r: ValidateResponse = serde_json::from_str(text).unwrap();
            let back: ValidateResponse =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(r, back);
        }
        let r: ValidateResponse = serde_json::from_str(no).unwrap();
        assert_eq!(
            r.data.unwrap().reason.as_deref(),
            Some("This code has expired")
        );
        let req = ValidateRequest {
            locker_id: Uuid::nil(),
            qr_data: "SP-1".into(),
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["qr_data"], "SP-1");
        assert!(serde_json::from_str::<ValidateRequest>(
            r#"{"locker_id": "nope", "qr_data": "x"}"#
        )
        .is_err());
    }
}
