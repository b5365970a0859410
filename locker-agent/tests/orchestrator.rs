//! QR validation over HTTP against a small orchestrator served by the test on 127.0.0.1: the
//! request the locker sends, an accepted code (the cell opens, the pickup completes), a code the
//! orchestrator rejects (its reason on the screen), one it does not know (its error body's
//! message), and an orchestrator that is silent or not there at all (the customer is told to try
//! again, an event says the code was not checked, nothing opens).

use crate::common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use locker_agent::config::OrchestratorConfig;
use locker_agent::orchestrator::{HttpValidator, ValidateRequest};
use protocol::lockboard::BoltState;
use protocol::ws::EventType;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

#[derive(Default)]
struct Orchestrator {
    /// code -> (status, body)
    answers: Mutex<HashMap<String, (u16, serde_json::Value)>>,
    /// (Authorization header, body) of every request
    seen: Mutex<Vec<(String, ValidateRequest)>>,
}

async fn validate(
    State(o): State<Arc<Orchestrator>>,
    headers: HeaderMap,
    Json(req): Json<ValidateRequest>,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    o.seen.lock().unwrap().push((auth, req.clone()));
    if req.qr_data == "SLOW" {
        // an orchestrator that accepted the connection and never answers
        std::future::pending::<()>().await;
    }
    let answer = o.answers.lock().unwrap().get(&req.qr_data).cloned();
    match answer {
        Some((status, body)) => (StatusCode::from_u16(status).unwrap(), Json(body)).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn orchestrator() -> (Arc<Orchestrator>, SocketAddr) {
    let o = Arc::new(Orchestrator::default());
    let app = Router::new()
        .route("/api/v1/qr/validate", post(validate))
        .with_state(o.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (o, addr)
}

fn validator(addr: SocketAddr, timeout_s: f64) -> Arc<HttpValidator> {
    let cfg = OrchestratorConfig {
        url: format!("http://{addr}/api/v1/qr/validate"),
        token: Some("orchestrator-token-1234".into()),
        token_file: None,
        timeout_s,
    };
    Arc::new(HttpValidator::new(&cfg, Uuid::from_u128(7)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_rejected_and_unknown_codes() {
    let (o, addr) = orchestrator().await;
    let h = Harness::start_validated_by(validator(addr, 5.0)).await;
    let a = Uuid::new_v4();
    h.sync(&[(a, 3)]).await;
    h.drop_parcel(a, 3).await;
    let order = Uuid::new_v4();
    o.answers.lock().unwrap().extend([
        (
            "GOOD".to_owned(),
            (
                200,
                json!({"success": true, "data": {"valid": true, "cell_uuid": a, "order_id": order}, "error": null}),
            ),
        ),
        (
            "EXPIRED".to_owned(),
            (
                200,
                json!({"success": true, "data": {"valid": false, "reason": "This code has expired"}, "error": null}),
            ),
        ),
        (
            "UNKNOWN".to_owned(),
            (
                404,
                json!({"success": false, "data": null, "error": {"code": "ORDER_NOT_FOUND", "message": "No order for this code"}}),
            ),
        ),
    ]);

    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"EXPIRED"}"#).await;
    assert_eq!(s, 403, "{v}");
    assert_error(&v, "QR_INVALID");
    assert!(
        h.screen().contains("This code has expired"),
        "{}",
        h.screen()
    );
    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"UNKNOWN"}"#).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        h.screen().contains("No order for this code"),
        "{}",
        h.screen()
    );
    assert_eq!(h.backend.count(EventType::QrRejected), 2);

    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"GOOD"}"#).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["cell_id"], 3);
    assert_eq!(v["order_id"], json!(order));
    // the locker said who it is and what it read, with its token
    {
        let seen = o.seen.lock().unwrap();
        let (auth, req) = seen.last().unwrap();
        assert_eq!(auth, "Bearer orchestrator-token-1234");
        assert_eq!(req.locker_id, Uuid::from_u128(7));
        assert_eq!(req.qr_data, "GOOD");
    }
    h.board.open_door(3).await.unwrap();
    h.board.close_door(3).await.unwrap();
    let ev = h.backend.wait_event(EventType::PickedUp, 3).await;
    assert_eq!(ev.order_id, Some(order));
    // one OPEN for the drop, one for the good code; the rejected ones opened nothing
    assert_eq!(h.board.snapshot().unlocked, vec![3, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_absent_orchestrator_opens_nothing() {
    let (o, addr) = orchestrator().await;
    // a port with nobody listening: bound, then closed
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };

    let h = Harness::start_validated_by(validator(addr, 0.3)).await;
    let a = Uuid::new_v4();
    h.sync(&[(a, 2)]).await;
    h.drop_parcel(a, 2).await;

    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"SLOW"}"#).await;
    assert_eq!(s, 504, "{v}");
    assert_error(&v, "VALIDATION_UNAVAILABLE");
    assert_eq!(
        o.seen.lock().unwrap().len(),
        1,
        "the request reached the orchestrator"
    );
    assert!(
        h.screen().contains("cannot check your code"),
        "{}",
        h.screen()
    );
    let rejected = h
        .backend
        .events
        .borrow()
        .iter()
        .rev()
        .find(|e| e.event_type == EventType::QrRejected)
        .cloned()
        .unwrap();
    assert!(rejected.reason.unwrap().starts_with("not checked"));

    // an orchestrator answering 500 is no verdict either
    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"CRASH"}"#).await;
    assert_eq!(s, 503, "{v}");
    assert_error(&v, "VALIDATION_UNAVAILABLE");
    // only the drop's OPEN reached the board
    assert_eq!(h.board.snapshot().unlocked, vec![2]);
    drop(h.stop().await);

    let h = Harness::start_validated_by(validator(gone, 2.0)).await;
    let b = Uuid::new_v4();
    h.sync(&[(b, 1)]).await;
    h.drop_parcel(b, 1).await;
    let (s, v) = h.post("/api/qr/scan", r#"{"qr_data":"ANY"}"#).await;
    assert_eq!(s, 503, "{v}");
    assert_error(&v, "VALIDATION_UNAVAILABLE");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("connect"),
        "{v}"
    );
    assert!(
        h.screen().contains("cannot check your code"),
        "{}",
        h.screen()
    );
    h.wait_board("bolt 1 locked", |s| s.bolt(1) == Some(BoltState::Locked))
        .await;
    assert_eq!(h.board.snapshot().unlocked, vec![1]);
}
