//! The recipes a user copies (`recipes/<crm>/`): each route's TOML serves, and its `send.sh` signs
//! and sends its `event.json` as that CRM would, and Patchbay answers verified.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

const RECIPES: &[(&str, &str)] = &[
    ("salesforce", "salesforce"),
    ("hubspot", "hubspot"),
    ("zendesk", "zendesk"),
    ("github", "github"),
    ("standard-webhooks", "billing"),
];

#[tokio::test]
async fn every_recipes_send_script_is_answered_verified_by_its_route() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    for (recipe, route) in RECIPES {
        let dir = root.join(recipe);
        let toml = std::fs::read_to_string(dir.join("route.toml")).unwrap();
        let app = spawn_app_with_hooks(&toml).await;
        let script = dir.join("send.sh");
        let address = app.address.clone();
        let out = tokio::task::spawn_blocking(move || {
            run_command(
                Command::new("bash")
                    .arg(script)
                    .env("PATCHBAY_URL", address),
            )
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{recipe}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(answer["verified"], true, "{recipe}: {answer}");
        assert_eq!(answer["conversationId"], SEED_ACTIVE_CALL, "{recipe}");
        assert!(
            app.sim.count("patch_attributes") >= 1,
            "{recipe} ({route}) wrote nothing"
        );
    }
}
