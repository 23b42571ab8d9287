//! Genesys's error answer, `ErrorBody`, with the correlation id its header repeats.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::wire::ErrorBody;

/// The id an error body used as `contextId`, so the header can carry the same one.
#[derive(Clone)]
pub(crate) struct CorrelationId(pub(crate) String);

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let context = uuid::Uuid::new_v4().to_string();
    let body = ErrorBody {
        message: message.into(),
        code: code.into(),
        status: status.as_u16(),
        context_id: context.clone(),
        message_with_params: message.into(),
        message_params: Default::default(),
        details: vec![],
        errors: vec![],
    };
    let mut r = (status, Json(body)).into_response();
    r.extensions_mut().insert(CorrelationId(context));
    r
}
