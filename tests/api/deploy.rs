//! The deployment files agree with the code: the ConfigMap loads as Patchbay's configuration, the
//! probes and the scrape point at real endpoints, and the image builds with CI's command.

use std::path::Path;

use crate::helpers::*;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The block scalar under `key: |` in a YAML text, unindented.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next().expect("the key is present");
    let indent = header.len() - header.trim_start().len() + 2;
    lines
        .take_while(|l| l.is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_configmap_loads_as_the_configuration_it_claims_to_be() {
    let toml = block_scalar(&read("deploy/kubernetes/configmap.yaml"), "patchbay.toml");
    let file = std::env::temp_dir().join(format!(
        "patchbay-cm-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&file, &toml).unwrap();
    let secrets = read("deploy/kubernetes/secret.yaml");
    let env: Vec<(String, String)> = secrets
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(k, _)| k.starts_with("PATCHBAY__"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect();
    assert!(env.len() >= 4, "the Secret holds the credentials: {env:?}");
    let settings = patchbay::Settings::load_with_env(Some(&file), env).unwrap();
    assert_eq!(
        settings.queue.backend,
        patchbay::config::QueueBackend::Redis
    );
    assert_eq!(settings.log.format, patchbay::config::LogFormat::Json);
    // Every key of the defaults is there: the ConfigMap is the whole file, not a fragment.
    let defaults = read("config/default.toml");
    for line in defaults
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
    {
        let key = line.split(" = ").next().unwrap();
        assert!(
            toml.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "{key} is missing from the ConfigMap"
        );
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn the_probes_and_the_scrape_point_at_real_endpoints() {
    let deployment = read("deploy/kubernetes/deployment.yaml");
    let app = spawn_app().await;
    for path in deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("path: "))
    {
        assert_eq!(app.get(path).await.status, 200, "{path}");
    }
    let monitor = read("deploy/kubernetes/servicemonitor.yaml");
    assert!(monitor.contains("path: /metrics"));
    assert!(
        monitor.contains("port: http")
            && read("deploy/kubernetes/service.yaml").contains("name: http")
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
