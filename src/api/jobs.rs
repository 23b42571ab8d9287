//! Jobs and dead letters: `GET /v1/jobs/<id>`, `GET /v1/dead-letters`, `POST /v1/dead-letters/<id>/replay`.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::problem::ApiError;
use crate::api::state::AppState;
use crate::store::queue::{Job, JobStatus, StoredProblem};

/// A job as callers see it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    pub status: JobStatus,
    pub conversation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// The names of the conversation's secure attributes it writes; their values are never shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secure_keys: Vec<String>,
    /// The custom-attributes schema of `customAttributes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_schema: Option<String>,
    /// Values for the conversation's custom-attributes record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_attributes: BTreeMap<String, serde_json::Value>,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// When a queued job runs next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<i64>,
    /// For `succeeded`: the answer a synchronous request would have got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// For `failed` and `dead`: the problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<StoredProblem>,
    /// The last transient failure, while a job is being retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub request_id: String,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        Self {
            next_attempt_at_ms: (job.status == JobStatus::Queued).then_some(job.next_attempt_at_ms),
            job_id: job.id,
            status: job.status,
            conversation_id: job.update.conversation_id,
            participant_id: job.update.participant_id,
            purpose: job.update.purpose,
            attributes: job.update.attributes,
            secure_keys: job.update.secure_keys,
            custom_schema: job.update.custom_schema,
            custom_attributes: job.update.custom_attributes,
            attempts: job.attempts,
            created_at_ms: job.created_at_ms,
            updated_at_ms: job.updated_at_ms,
            result: job.result,
            problem: job.problem,
            last_error: job.last_error,
            request_id: job.request_id,
        }
    }
}

/// One job's status, with its result or problem.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The jobId of a 202 answer")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 401, description = "unauthorized", body = crate::api::problem::ProblemBody, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"patchbay\"`"))),
        (status = 404, description = "job_not_found", body = crate::api::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "queue_unavailable, shutting_down", body = crate::api::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn get_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = state.queue.get(&id).await?.ok_or(ApiError::JobNotFound)?;
    Ok(Json(job.into()))
}

/// A page of dead letters: `after` (the last job id of the previous page) and `limit`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub after: Option<String>,
    pub limit: Option<usize>,
}

const PAGE_PARAMETERS: &[&str] = &["after", "limit"];

impl Page {
    /// Parses the query string strictly, as bodies are: a misspelled `limit` must not silently
    /// give the default page.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut page = Page::default();
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.as_ref() {
                "after" => page.after = Some(value.into_owned()),
                "limit" => {
                    page.limit = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|n| (1..=MAX_PAGE).contains(n))
                            .ok_or_else(|| {
                                ApiError::InvalidRequest(format!(
                                    "`limit` must be a whole number from 1 to {MAX_PAGE}"
                                ))
                            })?,
                    )
                }
                other => {
                    return Err(super::body::unknown(
                        "parameter",
                        other,
                        None,
                        PAGE_PARAMETERS,
                    ))
                }
            }
        }
        Ok(page)
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetters {
    pub items: Vec<JobView>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// Dead jobs, in acceptance order, paged (admin keys only).
#[utoipa::path(get, path = "/v1/dead-letters", tag = "jobs",
    params(
        ("after" = Option<String>, Query, min_length = 1, description = "The last jobId of the previous page"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "Page size, 1 to 500 (default 50)"),
    ),
    responses(
        (status = 200, description = "A page of dead jobs", body = DeadLetters),
        (status = 400, description = "invalid_request", body = crate::api::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = crate::api::problem::ProblemBody, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"patchbay\"`"))),
        (status = 503, description = "queue_unavailable, shutting_down", body = crate::api::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<DeadLetters>, ApiError> {
    let page = Page::parse(query.as_deref())?;
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    let jobs = state
        .queue
        .dead_letters(page.after.as_deref(), limit)
        .await?;
    let next = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.id.clone()))
        .flatten();
    Ok(Json(DeadLetters {
        items: jobs.into_iter().map(JobView::from).collect(),
        next,
    }))
}

/// Queues a dead job again (admin keys only).
#[utoipa::path(post, path = "/v1/dead-letters/{id}/replay", tag = "jobs",
    params(("id" = String, Path, description = "A dead job's jobId")),
    responses(
        (status = 202, description = "Queued again", body = crate::api::intake::Accepted,
            headers(("Location" = String, description = "/v1/jobs/<jobId>"))),
        (status = 401, description = "unauthorized", body = crate::api::problem::ProblemBody, content_type = "application/problem+json",
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"patchbay\"`"))),
        (status = 404, description = "job_not_found", body = crate::api::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "not_dead", body = crate::api::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "queue_unavailable, shutting_down", body = crate::api::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("apiKey" = []))
)]
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !state.queue.replay(&id).await? {
        return Err(match state.queue.get(&id).await? {
            Some(_) => ApiError::NotDead,
            None => ApiError::JobNotFound,
        });
    }
    state.wake.notify_one();
    tracing::info!(job_id = %id, "dead job replayed");
    let job = state.queue.get(&id).await?.ok_or(ApiError::JobNotFound)?;
    Ok(super::intake::accepted(&job))
}

/// Jobs keep what a synchronous caller would have been answered: the same body, the same problem.
pub struct JobAnswers;

impl crate::worker::Presenter for JobAnswers {
    fn result(&self, landed: crate::worker::Landed, request_id: String) -> serde_json::Value {
        use crate::api::exchange::AttributesResponse;
        let answer = match landed.participant {
            Some(outcome) => AttributesResponse::from_outcome(outcome, request_id),
            None => AttributesResponse::conversation_only(landed.conversation_id, request_id),
        };
        let mut answer = match landed.secure {
            Some(secure) => answer.with_secure(secure),
            None => answer,
        };
        for custom in landed.custom {
            answer = answer.with_custom(custom);
        }
        serde_json::to_value(answer).expect("answers serialize")
    }

    fn problem(&self, error: crate::custom::CustomError) -> crate::store::queue::StoredProblem {
        stored_problem(ApiError::from(error))
    }

    fn invalid_job(&self) -> crate::store::queue::StoredProblem {
        stored_problem(ApiError::InvalidRequest("the stored job is invalid".into()))
    }

    fn unsealable(&self, error: crate::seal::SealError) -> crate::store::queue::StoredProblem {
        stored_problem(ApiError::SecureKeyMissing(error))
    }
}

/// The caller-visible problem of an error, as a failed or dead job keeps it.
fn stored_problem(error: ApiError) -> crate::store::queue::StoredProblem {
    let p = error.problem();
    crate::store::queue::StoredProblem {
        code: p.code.to_string(),
        status: p.status.as_u16(),
        title: p.title.to_string(),
        detail: p.detail,
    }
}
