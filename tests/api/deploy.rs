//! The deployment files agree with the code: the kustomization's configuration loads over the
//! defaults, it names every manifest and the image once, the probes and the scrape point at real
//! endpoints, and the image builds with CI's command.

use std::path::Path;

use crate::helpers::*;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The variables the kustomization's Secret is generated from, as the example file sets them.
fn example_env() -> Vec<(String, String)> {
    read("deploy/kubernetes/base/patchbay.env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The items of a top-level YAML list `key:` (`  - item` lines, comments skipped).
fn yaml_list(yaml: &str, key: &str) -> Vec<String> {
    yaml.lines()
        .skip_while(|l| l.trim_end() != format!("{key}:"))
        .skip(1)
        .take_while(|l| l.starts_with(' ') || l.trim().is_empty())
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_deployments_configuration_loads_over_the_defaults_with_the_example_secret() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/base/patchbay.toml");
    let env = example_env();
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    for required in [
        "PATCHBAY__GENESYS__CLIENT_ID",
        "PATCHBAY__GENESYS__CLIENT_SECRET",
        "PATCHBAY__AUTH__API_KEYS",
        "PATCHBAY__AUTH__ADMIN_KEYS",
        "PATCHBAY__REDIS__URL",
    ] {
        assert!(
            names.contains(&required),
            "{required} is not in patchbay.env.example"
        );
    }
    let settings = patchbay::Settings::load_with_env(Some(&file), env).unwrap();
    assert_eq!(
        settings.queue.backend,
        patchbay::config::QueueBackend::Redis
    );
    assert_eq!(settings.log.format, patchbay::config::LogFormat::Json);
    assert_eq!(settings.genesys.region, "mypurecloud.com");
    // The drain fits in the pod's grace period.
    let deployment = read("deploy/kubernetes/base/deployment.yaml");
    let grace: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(settings.server.shutdown_timeout_ms < grace * 1000);
}

#[test]
fn the_kustomization_names_every_manifest_the_image_once_and_no_committed_secret() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/base");
    let kustomization = read("deploy/kubernetes/base/kustomization.yaml");
    let mut listed = yaml_list(&kustomization, "resources");
    listed.sort();
    let mut manifests: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    manifests.sort();
    assert_eq!(
        listed, manifests,
        "every manifest of the base is a resource"
    );
    // The Deployment names the image by the name the kustomization sets, and only there.
    assert!(read("deploy/kubernetes/base/deployment.yaml").contains("image: patchbay\n"));
    assert!(kustomization.contains("  - name: patchbay\n    newName: "));
    // The Secret comes from an env file git ignores; the example is what is committed.
    assert!(kustomization.contains("      - patchbay.env\n"));
    assert!(read(".gitignore")
        .lines()
        .any(|l| l == "deploy/kubernetes/base/patchbay.env"));
    let monitoring = read("deploy/kubernetes/monitoring/kustomization.yaml");
    assert_eq!(
        yaml_list(&monitoring, "resources"),
        ["../base", "servicemonitor.yaml"]
    );
}

#[tokio::test]
async fn the_probes_and_the_scrape_point_at_real_endpoints() {
    let deployment = read("deploy/kubernetes/base/deployment.yaml");
    let app = spawn_app().await;
    for path in deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path: "))
    {
        assert_eq!(app.get(path).await.status, 200, "{path}");
    }
    let monitor = read("deploy/kubernetes/monitoring/servicemonitor.yaml");
    assert!(monitor.contains("path: /metrics"));
    assert!(
        monitor.contains("port: http")
            && read("deploy/kubernetes/base/service.yaml").contains("name: http")
    );
    assert!(deployment.contains("--config\", \"/etc/patchbay/patchbay.toml"));
    assert!(deployment.contains("subPath: patchbay.toml"));
}

#[test]
fn ci_runs_the_readmes_two_commands_exactly_as_written() {
    let readme = read("README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the README opens with a shell block");
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        commands,
        ["cargo run --release -- demo", "cargo test --locked"]
    );
    let ci: Vec<String> = read(".ci/run")
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    for command in commands {
        assert!(
            ci.iter().any(|l| l == command),
            "{command} is not in .ci/run"
        );
    }
    assert!(ci.iter().any(|l| l == "bash .ci/container"));
}

#[test]
fn the_image_gives_its_store_directory_to_the_user_it_runs_as() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(dockerfile.contains("--chown=65532:65532 /out/var/lib/patchbay /var/lib/patchbay"));
    assert!(dockerfile.contains("PATCHBAY__QUEUE__PATH=/var/lib/patchbay/"));
}

#[test]
fn the_tracing_compose_file_sends_the_replicas_traces_to_its_collectors_otlp_http_port() {
    let compose = read("deploy/compose.tracing.yaml");
    let collector = read("deploy/otel/collector.yaml");
    assert!(compose.contains("PATCHBAY__TELEMETRY__OTLP_ENDPOINT: http://otel-collector:4318"));
    assert!(compose.contains("./otel/collector.yaml:/etc/otelcol/config.yaml"));
    assert!(
        collector.contains("endpoint: 0.0.0.0:4318"),
        "OTLP/HTTP is received"
    );
    assert!(collector.contains("receivers: [otlp]"));
    // The settings the file sets load over the defaults.
    let mut s = patchbay::demo::settings_for_simulator("http://127.0.0.1:1", API_KEY);
    s.telemetry.otlp_endpoint = "http://otel-collector:4318".into();
    s.telemetry.resource_attributes = "deployment.environment=local".into();
    s.validate()
        .expect("the compose file's telemetry settings are valid");
}
