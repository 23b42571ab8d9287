//! Plays Architect's part: renders each data action's Velocity request template, sends it with the
//! credential type the guide configures, applies the translation map, and checks the success schema.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

const PASSWORD: &str = "architect-password-7";
const PUBLIC_HOST: &str = "https://patchbay.example.com";

/// The route file from `deploy/genesys/`, with the password the guide sets from the environment.
async fn spawn_architect_app() -> TestApp {
    let route =
        std::fs::read_to_string(root().join("deploy/genesys/architect-route.toml")).unwrap();
    let route = format!("{route}password = \"{PASSWORD}\"\n");
    spawn_app_with_hooks(&route).await
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("deploy/genesys").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Resolves `${input.x}` / `$!{input.x}`; `None` inputs are Velocity nulls.
fn reference(quiet: bool, name: &str, inputs: &BTreeMap<&str, Option<&str>>) -> String {
    match inputs.get(name).copied().flatten() {
        Some(v) => v.to_string(),
        None if quiet => String::new(),
        // Velocity leaves an unresolved non-quiet reference as written: the request breaks, as in Genesys.
        None => format!("${{input.{name}}}"),
    }
}

/// The Velocity subset the files use: `${input.x}`, `$!{input.x}`, `$esc.jsonString(<ref>)`, and
/// `#if("<ref>" != "")…#end` (not nested).
fn render(template: &str, inputs: &BTreeMap<&str, Option<&str>>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("#if(") {
            let close = after.find(')').expect("#if closes");
            let condition = &after[..close];
            let body_start = &after[close + 1..];
            let end = body_start.find("#end").expect("#if has #end");
            let (left, right) = condition
                .split_once("!=")
                .expect("only != conditions are used");
            let left = render(left.trim().trim_matches('"'), inputs);
            assert_eq!(
                right.trim(),
                "\"\"",
                "conditions compare with the empty string"
            );
            if !left.is_empty() {
                out.push_str(&render(&body_start[..end], inputs));
            }
            rest = &body_start[end + 4..];
        } else if let Some(after) = rest.strip_prefix("$esc.jsonString(") {
            let close = after.find(')').expect("jsonString closes");
            let value = render(&after[..close], inputs);
            let quoted = serde_json::to_string(&value).unwrap();
            out.push_str(&quoted[1..quoted.len() - 1]);
            rest = &after[close + 1..];
        } else if let Some(after) = rest
            .strip_prefix("$!{input.")
            .or_else(|| rest.strip_prefix("${input."))
        {
            let quiet = rest.starts_with("$!");
            let close = after.find('}').expect("reference closes");
            out.push_str(&reference(quiet, &after[..close], inputs));
            rest = &after[close + 1..];
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// A JSONPath of the `$.a.b` form, as the files use.
fn json_path<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let rest = path.strip_prefix("$.").expect("paths start with $.");
    rest.split('.').try_fold(doc, |v, key| v.get(key))
}

/// Architect's response step: translation map (with defaults), then the success template.
fn translate(action: &Value, answer: &Value) -> Value {
    let response = &action["config"]["response"];
    let mut template = response["successTemplate"].as_str().unwrap().to_string();
    for (name, path) in response["translationMap"].as_object().unwrap() {
        let value = json_path(answer, path.as_str().unwrap())
            .map(|v| v.to_string())
            .unwrap_or_else(|| {
                response["translationMapDefaults"][name]
                    .as_str()
                    .unwrap()
                    .to_string()
            });
        template = template.replace(&format!("${{{name}}}"), &value);
    }
    serde_json::from_str(&template)
        .unwrap_or_else(|e| panic!("successTemplate renders to JSON: {e}: {template}"))
}

/// The checks Architect makes of a flat success schema: required fields and their types.
fn check_schema(schema: &Value, output: &Value) {
    for required in schema["required"].as_array().unwrap() {
        assert!(
            output.get(required.as_str().unwrap()).is_some(),
            "{required} missing from {output}"
        );
    }
    for (name, property) in schema["properties"].as_object().unwrap() {
        let value = &output[name];
        let ok = match property["type"].as_str().unwrap() {
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            other => panic!("flat schemas only: {other}"),
        };
        assert!(ok, "{name} = {value} is not a {}", property["type"]);
    }
}

/// Sends a rendered action the way the Web Services Data Actions integration does.
async fn execute(app: &TestApp, action: &Value, inputs: &BTreeMap<&str, Option<&str>>) -> Answer {
    let request = &action["config"]["request"];
    assert_eq!(request["requestType"], "POST");
    let url = request["requestUrlTemplate"].as_str().unwrap();
    let path = url
        .strip_prefix(PUBLIC_HOST)
        .expect("the template's host is the placeholder the guide replaces");
    let body = render(request["requestTemplate"].as_str().unwrap(), inputs);
    let mut headers: Vec<(String, String)> = request["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .unwrap()
                    .replace("${credentials.apiKey}", API_KEY),
            )
        })
        .collect();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("x-api-key"))
    {
        // Basic Auth credentials: the integration adds the header itself.
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("architect:{PASSWORD}"));
        headers.push(("Authorization".into(), format!("Basic {basic}")));
    }
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    app.post_raw(path, body, &refs).await
}

fn check_contract(action: &Value) {
    assert_eq!(action["integrationType"], "custom-rest-actions");
    assert_eq!(action["actionType"], "custom");
    assert_eq!(action["secure"], false);
    assert_eq!(action["contract"]["input"]["inputSchema"]["type"], "object");
    let success = &action["contract"]["output"]["successSchema"];
    for (_, p) in success["properties"].as_object().unwrap() {
        assert!(
            p["type"] != "object" && p["type"] != "array",
            "outputs stay flat"
        );
    }
}

#[tokio::test]
async fn the_single_attribute_action_works_with_both_credential_types() {
    for file in ["set-attribute.basic.json", "set-attribute.header.json"] {
        let app = spawn_architect_app().await;
        let action = load(file);
        check_contract(&action);
        // A value with quotes and a backslash must survive the template.
        let inputs = BTreeMap::from([
            ("conversationId", Some(SEED_ACTIVE_CALL)),
            ("participantId", None),
            ("purpose", Some("customer")),
            ("key", Some("crm.note")),
            ("value", Some(r#"said "VIP" \ urgent"#)),
        ]);
        let answer = execute(&app, &action, &inputs).await;
        assert_eq!(answer.status, 200, "{file}: {}", answer.body);
        let output = translate(&action, &answer.body);
        check_schema(&action["contract"]["output"]["successSchema"], &output);
        assert_eq!(
            output,
            json!({"verified": true, "participantId": SEED_ACTIVE_CALL_CUSTOMER, "mismatchCount": 0}),
            "{file}"
        );
        let stored = app
            .sim
            .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_CUSTOMER)
            .unwrap();
        assert!(
            stored.contains(&("crm.note".into(), r#"said "VIP" \ urgent"#.into())),
            "{stored:?}"
        );
    }
}

#[tokio::test]
async fn the_five_pair_action_sends_only_the_pairs_given() {
    for file in ["set-attributes.basic.json", "set-attributes.header.json"] {
        let app = spawn_architect_app().await;
        let action = load(file);
        check_contract(&action);
        let inputs = BTreeMap::from([
            ("conversationId", Some(SEED_ACTIVE_CALL)),
            ("participantId", Some(SEED_ACTIVE_CALL_AGENT)),
            ("key1", Some("vip")),
            ("value1", Some("true")),
            ("key2", Some("tier")),
            ("value2", Some("gold")),
            ("key3", Some("")),
            ("key4", None),
        ]);
        let answer = execute(&app, &action, &inputs).await;
        assert_eq!(answer.status, 200, "{file}: {}", answer.body);
        let output = translate(&action, &answer.body);
        check_schema(&action["contract"]["output"]["successSchema"], &output);
        assert_eq!(output["participantId"], SEED_ACTIVE_CALL_AGENT);
        assert_eq!(output["verified"], true);
        let stored = app
            .sim
            .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_AGENT)
            .unwrap();
        assert_eq!(
            stored,
            vec![
                ("tier".to_string(), "gold".to_string()),
                ("vip".to_string(), "true".to_string())
            ]
        );
    }
}

#[tokio::test]
async fn an_ended_conversation_takes_the_failure_path() {
    let app = spawn_architect_app().await;
    let action = load("set-attribute.basic.json");
    let inputs = BTreeMap::from([
        ("conversationId", Some(SEED_ENDED)),
        ("key", Some("k")),
        ("value", Some("v")),
    ]);
    // Any non-2xx sends the flow down the Failure path; the body names the reason for non-call flows.
    execute(&app, &action, &inputs)
        .await
        .assert_problem(409, "conversation_ended");
}

#[tokio::test]
async fn wrong_basic_credentials_are_refused() {
    let app = spawn_architect_app().await;
    let body = json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "b"}}).to_string();
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("architect:guess")
    );
    app.post_raw("/v1/hooks/architect", body, &[("authorization", &wrong)])
        .await
        .assert_problem(401, "unauthorized");
}

#[test]
fn the_renderer_handles_the_subset_the_files_use() {
    let inputs = BTreeMap::from([("a", Some("x\"y")), ("b", None)]);
    assert_eq!(
        render(
            r#"[$esc.jsonString(${input.a})]#if("$!{input.b}" != "")B#end#if("$!{input.a}" != "")A#end"#,
            &inputs
        ),
        r#"[x\"y]A"#
    );
}

#[tokio::test]
async fn the_secure_action_is_a_secure_data_action_and_writes_only_secure_attributes() {
    let app = spawn_architect_app().await;
    let action = load("set-secure-attributes.header.json");
    assert_eq!(
        action["secure"], true,
        "Genesys keeps a secure action's inputs out of its logs"
    );
    let inputs = BTreeMap::from([
        ("conversationId", Some(SEED_ACTIVE_CALL)),
        ("key1", Some("dob")),
        ("value1", Some("1970-07-04")),
        ("key2", Some("")),
    ]);
    let answer = execute(&app, &action, &inputs).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let output = translate(&action, &answer.body);
    check_schema(&action["contract"]["output"]["successSchema"], &output);
    assert_eq!(output, json!({"verified": true}));
    assert!(!answer.body.to_string().contains("1970-07-04"));
    let held = app.sim.secure_attributes(SEED_ACTIVE_CALL).unwrap();
    assert_eq!(held.get("dob").map(String::as_str), Some("1970-07-04"));
    assert_eq!(app.sim.count("patch_attributes"), 0);
}

#[tokio::test]
async fn the_custom_action_sends_text_that_the_schema_types() {
    let app = spawn_architect_app().await;
    let action = load("set-custom-attributes.header.json");
    check_contract(&action);
    let inputs = BTreeMap::from([
        ("conversationId", Some(SEED_ACTIVE_CALL)),
        ("schema", Some(patchbay::sim::SEED_SCHEMA_NAME)),
        ("key1", Some("caseNumber")),
        ("value1", Some("C-31")),
        ("key2", Some("priority")),
        ("value2", Some("2")),
        ("key3", None),
    ]);
    let answer = execute(&app, &action, &inputs).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let output = translate(&action, &answer.body);
    check_schema(&action["contract"]["output"]["successSchema"], &output);
    assert_eq!(output["verified"], true);
    let cid: patchbay::domain::ConversationId = SEED_ACTIVE_CALL.parse().unwrap();
    let record = patchbay::custom::record_id(&cid, patchbay::sim::SEED_SCHEMA_ID);
    assert_eq!(output["recordId"], record.as_str());
    let (values, _, _) = app.sim.custom_record(SEED_ACTIVE_CALL, &record).unwrap();
    assert_eq!(
        Value::Object(values),
        json!({"caseNumber": "C-31", "priority": 2})
    );
}
