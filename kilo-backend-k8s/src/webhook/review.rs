//! One admission review, as upstream's `/validate` handler answers it,
//! plus the cluster checks of [`super::check_peer`]. A DELETE is always allowed (it carries no
//! object and can hijack nothing).

use http::StatusCode;
use kilo_core::peer_spec::PeerSpec;
use serde_json::{Value, json};

use super::check::{PeerRejection, check_peer};
use super::{ClusterView, WebhookMetrics};

/// An HTTP answer: status, `Content-Type` and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: StatusCode,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Answer {
    /// An error as Go's `http.Error` writes it: plain text with a trailing newline.
    fn error(status: StatusCode, message: impl std::fmt::Display) -> Answer {
        Answer { status, content_type: "text/plain; charset=utf-8", body: format!("{message}\n") }
    }
}

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// Answers one `POST /validate`: `content_type` is the request's `Content-Type` header (if any),
/// `body` its body. Errors are HTTP 400 with upstream's messages; a decision is HTTP 200 with an
/// `admission.k8s.io/v1` AdmissionReview whose `response.uid` is the request's.
pub fn review(
    content_type: Option<&str>,
    body: &[u8],
    view: &ClusterView,
    metrics: &WebhookMetrics,
) -> Answer {
    let answer = decide(content_type, body, view, metrics);
    if answer.status != StatusCode::OK {
        metrics.errors.inc();
    }
    answer
}

fn decide(
    content_type: Option<&str>,
    body: &[u8],
    view: &ClusterView,
    metrics: &WebhookMetrics,
) -> Answer {
    let content_type = content_type.unwrap_or_default();
    if content_type != "application/json" {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            format!("received Content-Type={content_type}, expected application/json"),
        );
    }
    let review: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Answer::error(StatusCode::BAD_REQUEST, "the body is not a JSON object"),
        Err(e) => {
            return Answer::error(StatusCode::BAD_REQUEST, format!("cannot decode the body: {e}"));
        }
    };
    let api_version = review.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = review.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() {
        let text = String::from_utf8_lossy(body);
        return Answer::error(
            StatusCode::BAD_REQUEST,
            format!("Object 'Kind' is missing in '{text}'"),
        );
    }
    if api_version != API_VERSION || kind != KIND {
        return Answer::error(StatusCode::BAD_REQUEST, "only API v1 is supported");
    }
    let Some(request) = review.get("request").filter(|r| r.is_object()) else {
        return Answer::error(StatusCode::BAD_REQUEST, "the AdmissionReview has no request");
    };
    let uid = request.get("uid").cloned().unwrap_or(Value::String(String::new()));
    let operation = request.get("operation").and_then(Value::as_str).unwrap_or_default();
    if operation == "DELETE" {
        metrics.admission(operation, true);
        return decision(&uid, Ok(()));
    }
    let Some(object) = request.get("object").filter(|o| o.is_object()) else {
        return Answer::error(StatusCode::BAD_REQUEST, "the AdmissionReview request has no object");
    };
    let spec = match object.get("spec").cloned().map(serde_json::from_value::<PeerSpec>) {
        None => PeerSpec::default(),
        Some(Ok(spec)) => spec,
        Some(Err(e)) => {
            return Answer::error(StatusCode::BAD_REQUEST, format!("cannot decode the Peer: {e}"));
        }
    };
    let name = object
        .pointer("/metadata/name")
        .or_else(|| request.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let result = check_peer(&spec, name, view);
    metrics.admission(operation, result.is_ok());
    if let Err(e) = &result {
        tracing::info!(peer = name, "denied: {e}");
    }
    decision(&uid, result)
}

/// The AdmissionReview answering `uid` with `result`.
fn decision(uid: &Value, result: Result<(), PeerRejection>) -> Answer {
    let response = match result {
        Ok(()) => json!({ "uid": uid, "allowed": true }),
        Err(e) => {
            json!({ "uid": uid, "allowed": false, "status": { "metadata": {}, "message": e.to_string() } })
        }
    };
    let body = json!({ "apiVersion": API_VERSION, "kind": KIND, "response": response });
    Answer { status: StatusCode::OK, content_type: "application/json", body: body.to_string() }
}
