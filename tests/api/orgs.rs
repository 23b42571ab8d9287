//! One Genesys org is one value: two `Org`s built side by side each talk to their own org, with a
//! client, token, budget and engine of their own, and share nothing.

use std::time::Duration;

use patchbay::api::request::AttributesRequest;
use patchbay::demo::settings_for_simulator;
use patchbay::org::Org;
use patchbay::sim::Simulator;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn two_orgs_are_two_values_each_writing_to_its_own_org_within_its_own_budget() {
    let (first, second) = (Simulator::new(), Simulator::new());
    let (first_seen, second_seen) = (first.control(), second.control());
    let mut orgs = Vec::new();
    for (sim, per_minute) in [(&first, 50), (&second, 70)] {
        let url = sim.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let mut settings = settings_for_simulator(&url, API_KEY);
        settings.mirror.enabled = false;
        settings.genesys.rate_per_minute = per_minute;
        orgs.push(Org::build(&settings, None).unwrap());
    }
    let update = serde_json::from_value::<AttributesRequest>(json!({
        "conversationId": SEED_ACTIVE_CALL,
        "participantId": SEED_ACTIVE_CALL_AGENT,
        "attributes": {"org": "first"}
    }))
    .unwrap()
    .parse()
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let outcome = orgs[0].engine.submit(&update, deadline).await.unwrap();
    assert!(outcome.verified);

    assert_eq!(first_seen.count("patch_attributes"), 1);
    assert_eq!(
        second_seen.count("patch_attributes"),
        0,
        "nothing reached the other org"
    );
    assert_eq!(second_seen.grants(), 0, "nor its login");
    let spent = orgs[0].genesys().budget_view().await.standing;
    let untouched = orgs[1].genesys().budget_view().await.standing;
    assert_eq!(
        (spent.used, spent.limit),
        (2, 50),
        "the PATCH and the read back"
    );
    assert_eq!((untouched.used, untouched.limit), (0, 70));
    assert_eq!(orgs[1].settings.rate_per_minute, 70);
}
