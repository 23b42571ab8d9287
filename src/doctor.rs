//! `patchbay doctor`: checks a configuration against the org it names, real or simulated, before
//! anything is served. Each capability the configuration can use is tried with the one harmless
//! call that tells a missing permission apart (a conversation that does not exist answers 404 to a
//! client allowed to read it, 403 to one that is not), and the answer is one line per check, the
//! calls it spent, and an exit status that says whether what the configuration uses will work.

use std::io::Write;

use crate::config::Settings;
use crate::domain::lookup::{KeyKind, Lookup};
use crate::domain::{AttributeMap, ConversationId, SecureValues};
use crate::genesys::model::CustomRecordWrite;
use crate::genesys::{CallContext, GenesysClient, GenesysError};
use crate::org::Org;

/// The most Genesys calls a run makes: one per probe (a token grant is not an API call).
pub const MAX_CALLS: u32 = 10;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok(String),
    /// Genesys refused the call for a permission the client's role lacks.
    Missing(String),
    /// Anything else that stops the capability: a wrong region, a refused client, an outage.
    Failed(String),
    /// The configuration does not use it.
    NotConfigured(String),
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// Whether the configuration relies on it: a failure of a check it does not rely on is
    /// reported without failing the run.
    pub used: bool,
}

impl Check {
    fn line(&self) -> String {
        let (mark, text) = match &self.status {
            Status::Ok(t) => ("ok     ", t.clone()),
            Status::Missing(p) => ("MISSING", format!("missing permission {p}")),
            Status::Failed(t) => ("FAILED ", t.clone()),
            Status::NotConfigured(t) => ("--     ", format!("not configured: {t}")),
        };
        let unused = if self.used || matches!(self.status, Status::Ok(_) | Status::NotConfigured(_))
        {
            ""
        } else {
            " (not used by this configuration)"
        };
        format!("{mark}  {:<34} {text}{unused}", self.name)
    }

    fn fails(&self) -> bool {
        self.used && matches!(self.status, Status::Missing(_) | Status::Failed(_))
    }
}

/// A 404 (or another answer that shows the call was allowed) is the permission; a 403 names the
/// missing one, from Genesys's message when it lists it, else from what the call is documented to
/// need.
fn judged(result: Result<(), GenesysError>, needs: Option<&str>, allowed: &str) -> Status {
    match result {
        Ok(()) => Status::Ok(allowed.into()),
        Err(e) if e.status() == Some(404) => Status::Ok(allowed.into()),
        Err(e) if e.status() == Some(403) => Status::Missing(
            missing_permission(&e)
                .or(needs.map(str::to_string))
                .unwrap_or_else(|| "(Genesys named none: check the role and its divisions)".into()),
        ),
        Err(e) => Status::Failed(e.to_string()),
    }
}

/// The permission in Genesys's 403 message: "…missing the following permission(s): [name]".
fn missing_permission(error: &GenesysError) -> Option<String> {
    let GenesysError::Rejected {
        message: Some(message),
        ..
    } = error
    else {
        return None;
    };
    let listed = message.split_once('[')?.1.split_once(']')?.0;
    let first = listed.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// What the configuration relies on beyond reading conversations and writing participants.
struct Uses {
    secure: bool,
    custom: bool,
    lookups: bool,
}

impl Uses {
    fn of(settings: &Settings) -> Self {
        let routes = settings.hooks.values();
        Self {
            secure: !settings.secure.keyring().is_empty()
                || settings
                    .hooks
                    .values()
                    .any(|h| !h.secure_attributes.is_empty()),
            custom: routes.clone().any(|h| h.custom_schema.is_some()),
            lookups: settings.hooks.values().any(|h| h.lookup.is_some()),
        }
    }
}

/// Runs every check against the org `settings` names and writes the report to `out`: `Ok(true)`
/// when everything the configuration uses works.
pub async fn run(settings: &Settings, out: &mut impl Write) -> anyhow::Result<bool> {
    let org = Org::build(settings, None)?;
    let genesys = org.genesys();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut cx = CallContext::until(deadline);
    let mut checks = Vec::new();
    let g = &settings.genesys;
    writeln!(
        out,
        "patchbay doctor: {} (client {})",
        g.api_base(),
        g.client_id
    )?;
    match genesys.ready().await {
        Ok(()) => checks.push(Check {
            name: "region and client",
            // The login URL, when one is set, is what answered (the simulator's, a proxy's), not the region.
            status: Status::Ok(match &g.login_url {
                Some(login) => format!("{login} granted a token"),
                None => format!("{} granted a token", g.region),
            }),
            used: true,
        }),
        Err(e) => {
            let check = Check {
                name: "region and client",
                status: Status::Failed(format!(
                    "{e} (genesys.region, genesys.client_id, genesys.client_secret)"
                )),
                used: true,
            };
            writeln!(out, "{}", check.line())?;
            writeln!(
                out,
                "\nno token: nothing else can be checked (0 Genesys calls spent)"
            )?;
            return Ok(false);
        }
    }
    let uses = Uses::of(settings);
    // Ids no conversation has: the answers tell a permission apart without touching a call.
    let nobody: ConversationId = uuid::Uuid::new_v4()
        .to_string()
        .parse()
        .expect("a UUID is a conversation id");
    let participant = uuid::Uuid::new_v4().to_string();

    let read = genesys.get_conversation(&mut cx, &nobody).await.map(drop);
    checks.push(Check {
        name: "read a conversation",
        status: judged(
            read,
            Some("conversation:communication:view"),
            "GET /api/v2/conversations/{id}",
        ),
        used: true,
    });
    let write = genesys
        .patch_participant_attributes(&mut cx, &nobody, &participant, &AttributeMap::none())
        .await;
    checks.push(Check {
        name: "write participant attributes",
        status: judged(write, None, "PATCH …/participants/{id}/attributes"),
        used: true,
    });
    checks.push(lookups(genesys, &mut cx, uses.lookups).await);
    checks.extend(mirror(settings, genesys, &mut cx).await);
    checks.extend(secure(genesys, &mut cx, &nobody, uses.secure).await);
    checks.extend(custom(genesys, &mut cx, &nobody, uses.custom).await);

    for check in &checks {
        writeln!(out, "{}", check.line())?;
    }
    let view = genesys.budget_view().await;
    match view.reported {
        Some((reported, _)) => writeln!(
            out,
            "ok       {:<34} {} of {} calls used in its window (inin-ratelimit-*)",
            "token standing", reported.count, reported.allowed
        )?,
        None => writeln!(
            out,
            "--       {:<34} Genesys reported none",
            "token standing"
        )?,
    }
    configured(settings, out)?;
    writeln!(
        out,
        "\n{} Genesys calls spent (at most {MAX_CALLS}), and one token grant",
        cx.calls()
    )?;
    let failed: Vec<_> = checks
        .iter()
        .filter(|c| c.fails())
        .map(|c| c.name)
        .collect();
    if failed.is_empty() {
        writeln!(out, "everything this configuration uses works")?;
    } else {
        writeln!(out, "will not work: {}", failed.join(", "))?;
    }
    Ok(failed.is_empty())
}

async fn lookups(genesys: &GenesysClient, cx: &mut CallContext, used: bool) -> Check {
    let lookup = Lookup::new(
        KeyKind::Ani.key("+15550100999").expect("a valid number"),
        None,
        None,
    )
    .expect("valid options");
    let interval = crate::lookup::interval(time::OffsetDateTime::now_utc(), 0);
    let query = crate::lookup::query(&lookup, &interval, 1);
    let result = genesys
        .query_conversation_details(cx, &query)
        .await
        .map(drop);
    Check {
        name: "lookups (analytics details query)",
        status: judged(
            result,
            Some("analytics:conversationDetail:view"),
            "POST /api/v2/analytics/conversations/details/query",
        ),
        // Any caller may send a lookup to /v1/attributes; routes may rely on one.
        used,
    }
}

async fn mirror(settings: &Settings, genesys: &GenesysClient, cx: &mut CallContext) -> Vec<Check> {
    if !settings.mirror.enabled {
        return vec![Check {
            name: "live mirror (queues, topics)",
            status: Status::NotConfigured("mirror.enabled = false".into()),
            used: false,
        }];
    }
    // One page tells the permission; the mirror reads the rest when it starts.
    let queues = match genesys.routing_queue_pages(cx, 1).await {
        Ok(queues) => Status::Ok(format!(
            "queues listed ({} on the first page)",
            queues.len()
        )),
        Err(e) => judged(Err(e), Some("routing:queue:view"), ""),
    };
    let topics = match genesys.available_topics(cx).await {
        Ok(topics) => {
            let needed = [
                crate::genesys::stream::queue_topic("{id}"),
                crate::genesys::stream::attributes_topic("{id}"),
            ];
            match needed.iter().find(|t| !topics.contains(t)) {
                None => Status::Ok("queue conversations and attribute changes available".into()),
                Some(t) => Status::Failed(format!("the topic {t} is not available to this client")),
            }
        }
        Err(e) => judged(Err(e), None, ""),
    };
    vec![
        Check {
            name: "live mirror: list queues",
            status: queues,
            used: true,
        },
        Check {
            name: "live mirror: notification topics",
            status: topics,
            used: true,
        },
    ]
}

async fn secure(
    genesys: &GenesysClient,
    cx: &mut CallContext,
    nobody: &ConversationId,
    used: bool,
) -> Vec<Check> {
    let read = genesys.get_secure_attributes(cx, nobody).await.map(drop);
    let probe = SecureValues::from_json(
        serde_json::json!({"patchbayDoctor": "probe"})
            .as_object()
            .expect("an object"),
    )
    .expect("a valid value");
    let write = genesys.patch_secure_attributes(cx, nobody, &probe).await;
    vec![
        Check {
            name: "secure attributes: write",
            status: judged(
                write,
                Some("conversation:participant:attributesedit"),
                "PATCH …/secureattributes",
            ),
            used,
        },
        Check {
            name: "secure attributes: read back",
            status: judged(
                read,
                Some("conversation:participant:attributesview"),
                "GET …/secureattributes",
            ),
            used,
        },
    ]
}

async fn custom(
    genesys: &GenesysClient,
    cx: &mut CallContext,
    nobody: &ConversationId,
    used: bool,
) -> Vec<Check> {
    let schemas = match genesys.list_custom_schemas(cx).await {
        Ok(list) => Status::Ok(format!("{} schema(s) listed", list.len())),
        Err(e) => judged(Err(e), Some("conversation:customAttributes:schemaView"), ""),
    };
    let record = uuid::Uuid::new_v4().to_string();
    let read = genesys
        .get_custom_record(cx, nobody, &record)
        .await
        .map(drop);
    let write = genesys
        .patch_custom_record(
            cx,
            nobody,
            &CustomRecordWrite {
                id: record,
                schema_id: None,
                version: None,
                divisions: Vec::new(),
                custom_attributes: serde_json::Map::new(),
            },
        )
        .await
        .map(drop);
    vec![
        Check {
            name: "custom attributes: schemas",
            status: schemas,
            used,
        },
        Check {
            name: "custom attributes: write",
            status: judged(
                write,
                Some("conversation:customAttributes:edit"),
                "PATCH …/customattributes/bulk",
            ),
            used,
        },
        Check {
            name: "custom attributes: read back",
            status: judged(
                read,
                Some("conversation:customAttributes:view"),
                "GET …/customattributes/{id}",
            ),
            used,
        },
    ]
}

/// The routes and keys configured, by name and count: never a key.
fn configured(settings: &Settings, out: &mut impl Write) -> std::io::Result<()> {
    let a = &settings.auth;
    writeln!(
        out,
        "ok       {:<34} {} API key(s), {} admin key(s){}",
        "keys",
        a.api_keys.len(),
        a.admin_keys.len(),
        if a.allow_anonymous {
            ", anonymous allowed"
        } else {
            ""
        }
    )?;
    let ring = settings.secure.keyring();
    writeln!(
        out,
        "{}  {:<34} {}",
        if ring.is_empty() {
            "--     "
        } else {
            "ok     "
        },
        "secure attributes at rest",
        match ring.newest() {
            Some(newest) => format!("sealed under `{newest}`"),
            None => "no secure.keys: secure writes are synchronous only".into(),
        }
    )?;
    if settings.hooks.is_empty() {
        writeln!(out, "--       {:<34} none configured", "routes")?;
    }
    for (name, route) in &settings.hooks {
        let mut targets = Vec::new();
        if !route.attributes.is_empty() || route.attributes_from.is_some() {
            targets.push("participant");
        }
        if !route.secure_attributes.is_empty() {
            targets.push("secure");
        }
        if route.custom_schema.is_some() {
            targets.push("custom");
        }
        writeln!(
            out,
            "ok       {:<34} POST /v1/hooks/{name} ({}; {})",
            format!("route {name}"),
            match route.mode {
                crate::config::hooks::HookMode::Sync => "sync",
                crate::config::hooks::HookMode::Async => "async",
                crate::config::hooks::HookMode::SyncOrAsync => "sync_or_async",
            },
            targets.join(", ")
        )?;
    }
    Ok(())
}
