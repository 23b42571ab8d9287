//! The console's pages and actions: sign-in and sign-out, Now, Recent updates and one record,
//! Jobs (with replay), and Routes.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::views::{self, Chart, JobRow, Record, UpdateRow};
use super::{session_cookie, Console, SignedIn};

/// What every signed-in page's frame needs.
pub struct Chrome {
    pub page: &'static str,
    pub csrf: String,
    pub replica: String,
}

impl Chrome {
    fn new(console: &Console, session: &SignedIn, page: &'static str) -> Self {
        Self {
            page,
            csrf: console.sessions.form_token(session),
            replica: console.app.journal.replica().to_string(),
        }
    }
}

fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page did not render").into_response()
        }
    }
}

/// A form's token, checked before any action.
#[derive(Deserialize)]
pub struct Token {
    csrf: String,
}

fn forged(console: &Console, session: &SignedIn, token: &str) -> Option<Response> {
    if console.sessions.form_token_matches(session, token) {
        return None;
    }
    tracing::warn!("console: a form came without its session's token; refused");
    Some(
        (
            StatusCode::FORBIDDEN,
            "the form's token does not match this session",
        )
            .into_response(),
    )
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    refused: bool,
}

pub async fn sign_in_form() -> Response {
    render(SignInPage { refused: false })
}

#[derive(Deserialize)]
pub struct SignIn {
    key: String,
}

/// The admin key, posted once: a session cookie for the right one, the same page again for a
/// wrong one (without saying why), later and later as wrong keys repeat.
pub async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if !super::same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin request refused").into_response();
    }
    tokio::time::sleep(console.sessions.brake()).await;
    if !console.app.admin_keys.accepts(form.key.trim()) {
        console.sessions.failed();
        tracing::warn!("console: sign-in refused");
        let mut page = render(SignInPage { refused: true });
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    }
    console.sessions.succeeded();
    tracing::info!("console: signed in");
    let cookie = session_cookie(&console.sessions.issue(), console.sessions.ttl(), &headers);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console/now")).into_response()
}

pub async fn sign_out(
    State(console): State<Console>,
    session: SignedIn,
    headers: HeaderMap,
    Form(token): Form<Token>,
) -> Response {
    if let Some(refused) = forged(&console, &session, &token.csrf) {
        return refused;
    }
    console.sessions.revoke(&session);
    let cleared = session_cookie("", std::time::Duration::ZERO, &headers);
    (
        [(header::SET_COOKIE, cleared)],
        Redirect::to("/console/sign-in"),
    )
        .into_response()
}

pub struct Budget {
    pub used: u32,
    pub limit: u32,
    pub percent: u32,
    /// The bar's width in the panel's 300-wide SVG.
    pub bar: u32,
    pub paused: Option<String>,
    /// Genesys's `inin-ratelimit-count`, `-allowed`, `-reset` (s) and how long ago it said so.
    pub reported: Option<(u32, u32, u64, u64)>,
}

pub struct MirrorPanel {
    pub live: bool,
    pub channels: usize,
    pub topics: usize,
    pub last_frame: String,
    pub conversations: usize,
    pub gaps: u64,
}

#[derive(Template)]
#[template(path = "console/now.html")]
struct NowPage {
    chrome: Chrome,
    budget: Budget,
    updates_per_minute: String,
    calls_per_event: String,
    updates_5m: u64,
    codes: Vec<(String, u64)>,
    mirror: Option<MirrorPanel>,
    queue: Option<crate::store::queue::QueueStats>,
    chart: Chart,
    width: f64,
    height: f64,
}

pub async fn now(State(console): State<Console>, session: SignedIn) -> Response {
    let app = &console.app;
    let view = app.org.genesys().budget_view().await;
    let s = view.standing;
    app.journal.series().note_budget(s.used, s.limit);
    let percent = (f64::from(s.used) * 100.0 / f64::from(s.limit.max(1))).round() as u32;
    let budget = Budget {
        used: s.used,
        limit: s.limit,
        percent,
        bar: (percent.min(100) * 3),
        paused: s.paused_for.map(|d| format!("{:.1} s", d.as_secs_f64())),
        reported: view
            .reported
            .map(|(r, age)| (r.count, r.allowed, r.reset.as_secs(), age.as_secs())),
    };
    let (updates, calls, codes) = app.journal.series().totals(5);
    let mirror = app.org.mirror().map(|m| {
        let status = m.status();
        MirrorPanel {
            live: status.live,
            channels: status.channels,
            topics: status.topics,
            last_frame: m
                .since_last_frame()
                .map_or("never".into(), |d| format!("{:.0} s ago", d.as_secs_f64())),
            conversations: status.conversations,
            gaps: status.gaps,
        }
    });
    let queue = match app.queue.stats().await {
        Ok(stats) => Some(stats),
        Err(e) => {
            tracing::warn!(error = %e, "console: queue figures unavailable");
            None
        }
    };
    let now_minute = crate::journal::now_ms().div_euclid(60_000);
    render(NowPage {
        chrome: Chrome::new(&console, &session, "now"),
        budget,
        updates_per_minute: format!("{:.1}", updates as f64 / 5.0),
        calls_per_event: if updates == 0 {
            "—".into()
        } else {
            format!("{:.2}", calls as f64 / updates as f64)
        },
        updates_5m: updates,
        codes: codes.into_iter().collect(),
        mirror,
        queue,
        chart: Chart::new(&app.journal.series().minutes(), now_minute),
        width: views::WIDTH,
        height: views::HEIGHT,
    })
}

/// Recent updates' filters, from the page's query.
#[derive(Deserialize, Default)]
pub struct Filter {
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    route: String,
    #[serde(default)]
    conversation: String,
}

#[derive(Template)]
#[template(path = "console/updates.html")]
struct UpdatesPage {
    chrome: Chrome,
    rows: Vec<UpdateRow>,
    filter: Filter,
    outcomes: &'static [&'static str],
    sources: Vec<String>,
    kept: usize,
    show_values: bool,
    error: Option<String>,
}

/// Rows a page of Recent updates shows: the newest that match.
const ROWS_SHOWN: usize = 200;

const OUTCOMES: &[&str] = &[
    "verified",
    "mismatched",
    "failed",
    "queued",
    "unverified",
    "repeated",
];

pub async fn updates(
    State(console): State<Console>,
    session: SignedIn,
    Query(filter): Query<Filter>,
) -> Response {
    let journal = &console.app.journal;
    let (entries, error) = match journal.recent(journal.capacity()).await {
        Ok(entries) => (entries, None),
        Err(e) => {
            tracing::warn!(error = %e, "console: recent updates unavailable");
            (
                Vec::new(),
                Some("recent updates could not be read".to_string()),
            )
        }
    };
    let sources: Vec<String> = std::iter::once("api".to_string())
        .chain(console.app.hooks.iter().map(|(n, _)| format!("hook:{n}")))
        .chain(std::iter::once("queue".to_string()))
        .collect();
    let conversation = filter.conversation.trim().to_ascii_lowercase();
    let rows = entries
        .iter()
        .filter(|e| filter.outcome.is_empty() || e.outcome.name() == filter.outcome)
        .filter(|e| filter.route.is_empty() || e.source == filter.route)
        .filter(|e| {
            conversation.is_empty()
                || e.conversation_id
                    .as_deref()
                    .is_some_and(|c| c.contains(&conversation))
        })
        .take(ROWS_SHOWN)
        .map(UpdateRow::from)
        .collect();
    render(UpdatesPage {
        chrome: Chrome::new(&console, &session, "updates"),
        rows,
        filter,
        outcomes: OUTCOMES,
        sources,
        kept: journal.capacity(),
        show_values: journal.show_values(),
        error,
    })
}

#[derive(Template)]
#[template(path = "console/update.html")]
struct UpdatePage {
    chrome: Chrome,
    record: Record,
}

pub async fn update(
    State(console): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
) -> Response {
    let journal = &console.app.journal;
    let entry = journal
        .recent(journal.capacity())
        .await
        .ok()
        .and_then(|entries| entries.into_iter().find(|e| e.id == id));
    match entry {
        Some(entry) => render(UpdatePage {
            chrome: Chrome::new(&console, &session, "updates"),
            record: Record::from(&entry),
        }),
        None => (
            StatusCode::NOT_FOUND,
            "this update is no longer among the recent ones",
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/jobs.html")]
struct JobsPage {
    chrome: Chrome,
    stats: Option<crate::store::queue::QueueStats>,
    unfinished: Vec<JobRow>,
    dead: Vec<JobRow>,
    dead_codes: Vec<String>,
    replayed: Option<u64>,
    error: Option<String>,
}

/// Jobs listed a page: the oldest unfinished, and the first dead.
const JOBS_SHOWN: usize = 200;

#[derive(Deserialize)]
pub struct JobsQuery {
    replayed: Option<u64>,
}

pub async fn jobs(
    State(console): State<Console>,
    session: SignedIn,
    Query(q): Query<JobsQuery>,
) -> Response {
    let queue = &console.app.queue;
    let (stats, unfinished, dead) = (
        queue.stats().await,
        queue.unfinished(JOBS_SHOWN).await,
        queue.dead_letters(None, JOBS_SHOWN).await,
    );
    let error = [
        stats.as_ref().err(),
        unfinished.as_ref().err(),
        dead.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .next()
    .map(|e| {
        tracing::warn!(error = %e, "console: the queue store did not answer");
        "the queue store did not answer".to_string()
    });
    let dead: Vec<_> = dead.unwrap_or_default();
    let mut dead_codes: Vec<String> = dead
        .iter()
        .filter_map(|j| j.problem.as_ref().map(|p| p.code.clone()))
        .collect();
    dead_codes.sort();
    dead_codes.dedup();
    render(JobsPage {
        chrome: Chrome::new(&console, &session, "jobs"),
        stats: stats.ok(),
        unfinished: unfinished
            .unwrap_or_default()
            .iter()
            .map(JobRow::from)
            .collect(),
        dead: dead.iter().map(JobRow::from).collect(),
        dead_codes,
        replayed: q.replayed,
        error,
    })
}

pub async fn replay_one(
    State(console): State<Console>,
    session: SignedIn,
    Path(id): Path<String>,
    Form(token): Form<Token>,
) -> Response {
    if let Some(refused) = forged(&console, &session, &token.csrf) {
        return refused;
    }
    let replayed = match console.app.queue.replay(&id).await {
        Ok(true) => {
            console.app.wake.notify_one();
            tracing::info!(job_id = %id, "console: dead job replayed");
            1
        }
        Ok(false) => 0,
        Err(e) => {
            tracing::error!(error = %e, "console: could not replay a job");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the queue store did not answer",
            )
                .into_response();
        }
    };
    Redirect::to(&format!("/console/jobs?replayed={replayed}")).into_response()
}

/// Replay every dead job matching the form's filter.
#[derive(Deserialize)]
pub struct ReplayMatching {
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    conversation: String,
}

/// Dead jobs looked through for one replay of all that match.
const REPLAY_SCAN: usize = 10_000;

pub async fn replay_matching(
    State(console): State<Console>,
    session: SignedIn,
    Form(form): Form<ReplayMatching>,
) -> Response {
    if let Some(refused) = forged(&console, &session, &form.csrf) {
        return refused;
    }
    let queue = &console.app.queue;
    let conversation = form.conversation.trim().to_ascii_lowercase();
    let mut matching = Vec::new();
    let mut cursor: Option<String> = None;
    let mut scanned = 0;
    while scanned < REPLAY_SCAN {
        let page = match queue.dead_letters(cursor.as_deref(), 500).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "console: could not list dead jobs");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the queue store did not answer",
                )
                    .into_response();
            }
        };
        let Some(last) = page.last() else { break };
        cursor = Some(last.id.clone());
        scanned += page.len();
        matching.extend(
            page.iter()
                .filter(|j| {
                    form.code.is_empty() || j.problem.as_ref().is_some_and(|p| p.code == form.code)
                })
                .filter(|j| {
                    conversation.is_empty() || j.update.conversation_id.contains(&conversation)
                })
                .map(|j| j.id.clone()),
        );
    }
    let mut replayed = 0;
    for id in matching {
        match queue.replay(&id).await {
            Ok(true) => replayed += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "console: could not replay a job");
                break;
            }
        }
    }
    if replayed > 0 {
        console.app.wake.notify_one();
    }
    tracing::info!(jobs = replayed, "console: dead jobs replayed");
    Redirect::to(&format!("/console/jobs?replayed={replayed}")).into_response()
}

pub struct RouteView {
    pub name: String,
    pub scheme: &'static str,
    pub mode: &'static str,
    pub mapping: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "console/routes.html")]
struct RoutesPage {
    chrome: Chrome,
    routes: Vec<RouteView>,
}

pub async fn routes(State(console): State<Console>, session: SignedIn) -> Response {
    use crate::config::hooks::HookMode;
    let routes = console
        .app
        .hooks
        .iter()
        .map(|(name, route)| RouteView {
            name: name.clone(),
            scheme: route.auth.scheme_name(),
            mode: match route.mode {
                HookMode::Sync => "sync",
                HookMode::Async => "async",
                HookMode::SyncOrAsync => "sync_or_async",
            },
            mapping: route.mapping.describe(),
        })
        .collect();
    render(RoutesPage {
        chrome: Chrome::new(&console, &session, "routes"),
        routes,
    })
}
