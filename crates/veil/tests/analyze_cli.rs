//! `veil analyze DIR`: the built binary on fixture directories (in
//! crates/veil-model/tests/fixtures/analyze): golden table output, `--output json`, the exit
//! code on errors, and a directory with nothing to report. Also: `veil up` prints the same
//! findings as warnings before it starts anything.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../veil-model/tests/fixtures/analyze")
}

/// Runs `veil analyze <args>` from the fixture directory, so that paths print relative.
fn veil_analyze(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("analyze")
        .args(args)
        .current_dir(fixtures())
        .env("VEIL_LOG", "error")
        .output()
        .expect("run veil");
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn table_output_matches_golden() {
    let out = veil_analyze(&["cli"]);
    let golden = std::fs::read_to_string(fixtures().join("cli.expected")).expect("golden file");
    assert_eq!(stdout(&out), golden);
    assert_eq!(out.status.code(), Some(0), "warnings only: success");
}

#[test]
fn json_output_parses_with_every_field() {
    let out = veil_analyze(&["cli", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(
        (v["errors"].as_u64(), v["warnings"].as_u64()),
        (Some(0), Some(4)),
        "{v:#}"
    );
    let findings = v["findings"].as_array().expect("findings array");
    let got: Vec<(String, String, u64)> = findings
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("code"), s("file"), f["line"].as_u64().unwrap_or_default())
        })
        .collect();
    let want = [
        ("VEIL0002", "cli/routes.yaml", 2),
        ("VEIL0402", "cli/routes.yaml", 18),
        ("VEIL0103", "cli/shop.yaml", 28),
        ("VEIL0201", "cli/shop.yaml", 72),
    ];
    let want: Vec<(String, String, u64)> = want
        .iter()
        .map(|(c, f, l)| (c.to_string(), f.to_string(), *l))
        .collect();
    assert_eq!(got, want);
    let trap = findings.get(2).expect("VEIL0103");
    assert_eq!(trap["level"], "warning");
    assert_eq!(trap["resource"], "PeerAuthentication shop/cart-metrics");
    assert!(
        trap["message"]
            .as_str()
            .is_some_and(|m| m.contains("port 80")),
        "{trap:#}"
    );
    assert!(
        trap["hint"]
            .as_str()
            .is_some_and(|h| h.contains("Key it on 8080")),
        "{trap:#}"
    );
}

#[test]
fn load_errors_are_printed_and_fail() {
    let out = veil_analyze(&["cli-errors"]);
    assert_eq!(
        stdout(&out),
        "cli-errors/policy.yaml:10: error[VEIL0101]: spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS; add a selector or remove portLevelMtls\n\
         cli-errors/policy.yaml:21: error[VEIL0001]: spec.mtls.mode: unknown mode \"STRCT\"; expected one of UNSET, DISABLE, PERMISSIVE, STRICT\n\
         cli-errors: 2 error(s), 0 warning(s)\n"
    );
    assert_eq!(out.status.code(), Some(1));
    let json = veil_analyze(&["cli-errors", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("valid JSON");
    assert_eq!(v["errors"].as_u64(), Some(2), "{v:#}");
    assert_eq!(v["findings"][0]["code"], "VEIL0101");
    assert_eq!(v["findings"][0]["level"], "error");
    assert_eq!(json.status.code(), Some(1));
}

#[test]
fn pii_demo_has_nothing_to_report() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pii-demo");
    let out = veil_analyze(&[dir.to_str().expect("utf-8 path")]);
    assert_eq!(
        stdout(&out),
        format!("{}: 0 error(s), 0 warning(s)\n", dir.display())
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn unknown_output_format_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .args(["analyze", "cli", "--output", "xml"])
        .current_dir(fixtures())
        .output()
        .expect("run veil");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use table or json"));
    assert!(out.stdout.is_empty());
}

/// Runs `veil up DIR` with a state directory that is a regular file, so that it stops at
/// creating the state directory: after the configuration check and the analysis, before
/// anything is created.
fn veil_up_until_state_dir(dir: &Path) -> Output {
    let _mesh = common::lock();
    let state = tempfile::NamedTempFile::new().expect("temp file");
    let out = Command::new(env!("CARGO_BIN_EXE_veil"))
        .arg("up")
        .arg(dir)
        .arg("--state-dir")
        .arg(state.path())
        .env("VEIL_LOG", "error")
        .output()
        .expect("run veil up");
    assert_ne!(
        out.status.code(),
        Some(0),
        "veil up must stop at the state directory"
    );
    out
}

#[test]
fn veil_up_prints_findings_as_warnings() {
    let dir = fixtures().join("cli").canonicalize().expect("fixture dir");
    let out = stdout(&veil_up_until_state_dir(&dir));
    let shop = dir.join("shop.yaml");
    for want in [
        format!("warning: {}:28: [VEIL0103] PeerAuthentication shop/cart-metrics keys portLevelMtls on port 80", shop.display()),
        format!("warning: {}:72: [VEIL0201] DestinationRule shop/cart sets tls.mode DISABLE", shop.display()),
        format!("warning: {}:18: [VEIL0402] VirtualService shop/cart routes to crat", dir.join("routes.yaml").display()),
    ] {
        assert!(out.lines().any(|l| l.starts_with(&want)), "missing {want:?} in:\n{out}");
    }
    let pii = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pii-demo");
    let control = stdout(&veil_up_until_state_dir(&pii));
    assert!(
        !control.contains("[VEIL"),
        "the PII demo has nothing to report:\n{control}"
    );
}
