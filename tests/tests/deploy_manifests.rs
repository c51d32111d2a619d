//! deploy/ checked offline, as far as this machine can without Docker or a
//! cluster: `deploy/validate/check.sh` renders the kustomizations and
//! validates every object against the Kubernetes schemas, loads
//! `deploy/compose.yaml` with compose-go and lints `deploy/Dockerfile`
//! (tools from `deploy/validate/install-tools.sh`). Then every environment
//! variable our containers set, in the manifests and in compose, must be one
//! the binary reads: the `[env: NAME=]` markers of its own `--help`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Always accepted: read by tracing-subscriber's filter, not by clap.
const ALWAYS_ALLOWED: &[&str] = &["RUST_LOG"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// One container (Kubernetes) or service (compose) running one of our binaries.
#[derive(Debug, Clone)]
struct Container {
    place: String,
    binary: String,
    env: Vec<String>,
}

/// What check.sh said, and the env report it wrote.
struct Validation {
    /// None when install-tools.sh and check.sh both succeeded.
    failure: Option<String>,
    output: String,
    containers: Option<Vec<Container>>,
}

/// install-tools.sh then check.sh, once for all the tests of this file.
fn validation() -> &'static Validation {
    static VALIDATION: OnceLock<Validation> = OnceLock::new();
    VALIDATION.get_or_init(run_validation)
}

fn run_validation() -> Validation {
    let root = repo_root();
    let install = Command::new("bash")
        .arg("deploy/validate/install-tools.sh")
        .current_dir(&root)
        .output();
    match install {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Validation {
                failure: Some(format!(
                    "the validation tools are missing and could not be installed: \
                     `bash deploy/validate/install-tools.sh` failed (it needs python3 with venv, \
                     Go, and PyPI plus the Go module proxy):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )),
                output: String::new(),
                containers: None,
            }
        }
        Err(e) => {
            return Validation {
                failure: Some(format!("could not run bash for install-tools.sh: {e}")),
                output: String::new(),
                containers: None,
            }
        }
    }

    let report = std::env::temp_dir().join(format!("{}.json", e2e::unique("cyberday-env-report")));
    let check = Command::new("bash")
        .arg("deploy/validate/check.sh")
        .env("CYBERDAY_ENV_REPORT", &report)
        .current_dir(&root)
        .output()
        .expect("running bash deploy/validate/check.sh");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let containers = std::fs::read_to_string(&report)
        .ok()
        .map(|text| parse_report(&text));
    let _ = std::fs::remove_file(&report);
    Validation {
        failure: (!check.status.success())
            .then(|| "bash deploy/validate/check.sh found problems".to_string()),
        output,
        containers,
    }
}

fn parse_report(text: &str) -> Vec<Container> {
    let v: serde_json::Value = serde_json::from_str(text).expect("the env report is JSON");
    v.as_array()
        .expect("the env report is a JSON array")
        .iter()
        .map(|c| Container {
            place: c["where"].as_str().expect("where").to_string(),
            binary: c["binary"].as_str().expect("binary").to_string(),
            env: c["env"]
                .as_array()
                .expect("env")
                .iter()
                .map(|n| n.as_str().expect("env name").to_string())
                .collect(),
        })
        .collect()
}

/// Our containers whose place starts with `prefix`; panics if check.sh could
/// not produce the report at all.
fn containers(prefix: &str) -> Vec<Container> {
    let v = validation();
    let Some(all) = &v.containers else {
        panic!(
            "check.sh wrote no env report: {}\n{}",
            v.failure.as_deref().unwrap_or("unknown reason"),
            v.output
        );
    };
    let picked: Vec<Container> = all
        .iter()
        .filter(|c| c.place.starts_with(prefix))
        .cloned()
        .collect();
    assert!(
        !picked.is_empty(),
        "the env report lists no container under {prefix}: {all:?}"
    );
    picked
}

/// The long `--help` of one of our binaries.
fn help_text(binary: &str) -> String {
    static HELP: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    let cache = HELP.get_or_init(Default::default);
    if let Some(text) = cache.lock().unwrap().get(binary) {
        return text.clone();
    }
    let path = e2e::bin(binary);
    // A clean environment: clap prints the current value of set variables.
    let out = Command::new(&path)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("running {} --help: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} --help failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    cache
        .lock()
        .unwrap()
        .insert(binary.to_string(), text.clone());
    text
}

/// The environment variables clap lists in a help text (`[env: NAME=...]`).
fn env_markers(help: &str) -> BTreeSet<String> {
    help.match_indices("[env: ")
        .filter_map(|(at, marker)| {
            let rest = &help[at + marker.len()..];
            // `[env: NAME=value]`, or `[env: NAME]` when clap hides the value.
            let name = &rest[..rest.find(['=', ']'])?];
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            valid.then(|| name.to_string())
        })
        .collect()
}

/// Option blocks of a clap long help without an `[env: ...]` marker
/// (help and version aside).
fn flags_without_env(help: &str) -> Vec<String> {
    let mut blocks: Vec<(String, String)> = vec![];
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('-') && indent <= 6 {
            blocks.push((line.trim().to_string(), String::new()));
        } else if let Some((_, body)) = blocks.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    blocks
        .into_iter()
        .filter(|(head, _)| !head.contains("--help") && !head.contains("--version"))
        .filter(|(head, body)| !head.contains("[env: ") && !body.contains("[env: "))
        .map(|(head, _)| head)
        .collect()
}

fn accepted_env(binary: &str) -> BTreeSet<String> {
    let names = env_markers(&help_text(binary));
    assert!(
        !names.is_empty(),
        "`{binary} --help` lists no `[env: NAME=]` markers: is {} still a placeholder? \
         Rebuild with `cargo build --workspace --bins`.",
        e2e::bin(binary).display()
    );
    names
}

fn assert_env_names_accepted(prefix: &str) {
    let mut problems = vec![];
    for c in containers(prefix) {
        let accepted = accepted_env(&c.binary);
        for name in &c.env {
            if !accepted.contains(name) && !ALWAYS_ALLOWED.contains(&name.as_str()) {
                problems.push(format!(
                    "{} sets {name}, which `{} --help` does not list",
                    c.place, c.binary
                ));
            }
        }
    }
    let known: BTreeMap<&str, BTreeSet<String>> = ["master", "worker", "producer", "delivery"]
        .into_iter()
        .map(|b| (b, accepted_env(b)))
        .collect();
    assert!(
        problems.is_empty(),
        "environment variables the binaries do not read (a typo, or a renamed flag):\n  {}\n\
         the binaries read: {known:#?}",
        problems.join("\n  ")
    );
}

#[test]
fn deploy_files_pass_offline_validation() {
    let v = validation();
    assert!(
        v.failure.is_none(),
        "{}\n{}",
        v.failure.as_deref().unwrap_or_default(),
        v.output
    );
}

#[test]
fn kubernetes_env_names_are_flags_of_the_binaries() {
    assert_env_names_accepted("deploy/k8s");
}

#[test]
fn compose_env_names_are_flags_of_the_binaries() {
    assert_env_names_accepted("deploy/compose.yaml");
}

/// Kubernetes configures by environment only, so a flag without a variable
/// would be out of reach of the manifests.
#[test]
fn every_flag_of_the_binaries_has_an_environment_variable() {
    let mut problems = vec![];
    for binary in ["master", "worker", "producer", "delivery"] {
        for flag in flags_without_env(&help_text(binary)) {
            problems.push(format!("{binary}: {flag}"));
        }
    }
    assert!(
        problems.is_empty(),
        "flags without an environment variable (add `env = \"...\"` to the clap arg):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn env_markers_and_flags_are_read_from_clap_help() {
    let help = "\
Usage: demo [OPTIONS]

Options:
      --bootstrap-servers <BOOTSTRAP_SERVERS>
          Kafka bootstrap servers

          [env: KAFKA_BOOTSTRAP_SERVERS=broker:9092]
          [default: 127.0.0.1:9092]

  -X <KEY=VALUE>
          A librdkafka property

          [env: KAFKA_OPTIONS=]

      --smtp-url <SMTP_URL>
          A URL whose value stays out of the help

          [env: DELIVERY_SMTP_URL]

      --seed <SEED>
          Seed of the generator

  -h, --help
          Print help (see a summary with '-h')
";
    assert_eq!(
        env_markers(help),
        BTreeSet::from([
            "KAFKA_BOOTSTRAP_SERVERS".to_string(),
            "KAFKA_OPTIONS".to_string(),
            "DELIVERY_SMTP_URL".to_string()
        ])
    );
    assert_eq!(flags_without_env(help), vec!["--seed <SEED>".to_string()]);
}
