//! One function per subcommand; each only parses arguments, calls a library
//! crate and prints.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Where `veil up` keeps its CA, journal, logs and records.
#[derive(clap::Args, Debug, Clone)]
pub struct StateArgs {
    /// State directory (CA root and key, journal, logs, connection records).
    #[arg(long, env = "VEIL_STATE_DIR", default_value = "/var/lib/veil")]
    pub state_dir: PathBuf,
}

/// `veil validate DIR`.
pub fn validate(dir: &Path) -> Result<ExitCode> {
    match veil_local::up::check(dir) {
        Ok(report) => {
            for w in &report.warnings {
                println!("warning: {w}");
            }
            println!("{}: {} resources, no errors", dir.display(), report.resources);
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                println!("error: {e}");
            }
            println!("{}: {} error(s); nothing was applied", dir.display(), errors.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `veil analyze DIR`: load errors (which stop the analysis) or the analyzer's findings,
/// as `file:line: level[CODE]: message. hint` lines and a summary, or as JSON
/// (`{"findings": [...], "errors": N, "warnings": M}`).
pub fn analyze(dir: &Path, output: &str) -> Result<ExitCode> {
    use veil_model::analyze::{Finding, Level};
    if output != "table" && output != "json" {
        bail!("unknown output format {output:?}; use table or json");
    }
    let findings: Vec<Finding> = match veil_api::load_dir(dir) {
        Ok(snapshot) => {
            let ignored = snapshot.warnings.iter().map(Finding::from_load_warning);
            ignored.chain(veil_model::analyze::analyze(&snapshot)).collect()
        }
        Err(errors) => errors.0.iter().map(Finding::from_load_error).collect(),
    };
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.len() - errors;
    if output == "json" {
        let report = serde_json::json!({ "findings": findings, "errors": errors, "warnings": warnings });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &findings {
            println!("{f}");
        }
        println!("{}: {errors} error(s), {warnings} warning(s)", dir.display());
    }
    Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `veil up DIR`.
pub fn up(dir: &Path, state: &StateArgs, ready_timeout: u64) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let options = veil_local::up::UpOptions {
        dir: dir.to_path_buf(),
        state_dir: state.state_dir.clone(),
        ready_timeout: Duration::from_secs(ready_timeout),
        veil_binary: std::env::current_exe().context("cannot find the veil binary")?,
    };
    rt.block_on(veil_local::up::run(options, crate::agent::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// `veil down`.
pub fn down(state: &StateArgs) -> Result<ExitCode> {
    let removed = veil_local::up::down(&state.state_dir)?;
    println!("veil down: removed {removed} item(s); nothing of the local mesh is left");
    Ok(ExitCode::SUCCESS)
}

/// `veil status`.
pub fn status(state: &StateArgs, output: &str) -> Result<ExitCode> {
    let status = veil_local::up::status(&state.state_dir)?;
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(&status)?),
        "table" => print!("{}", status.table()),
        other => bail!("unknown output format {other:?}; use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `veil audit`.
pub fn audit(
    state: &StateArgs,
    duration: Option<f64>,
    expect_encrypted: bool,
    grep: Option<&str>,
    pcap: Option<PathBuf>,
    output: &str,
) -> Result<ExitCode> {
    let mesh = veil_local::up::MeshState::load(&state.state_dir)?;
    let tmp;
    let pcap_path = match pcap {
        Some(p) => p,
        None => {
            tmp = tempfile_path()?;
            tmp.clone()
        }
    };
    let capture = veil_audit::Capture::start(&mesh.bridge, &pcap_path)?;
    eprintln!(
        "capturing on {} (the links between pods){}",
        mesh.bridge,
        match duration {
            Some(d) => format!(" for {d} s"),
            None => "; press Ctrl-C to stop".into(),
        }
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        match duration {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs_f64(d.max(0.0))) => {}
                    _ = crate::agent::shutdown_signal() => {}
                }
            }
            None => crate::agent::shutdown_signal().await,
        }
    });
    capture.stop()?;
    let pods: Vec<veil_audit::PodAddress> = mesh
        .pods
        .iter()
        .map(|p| veil_audit::PodAddress { pod: p.name.clone(), namespace: p.namespace.clone(), ip: p.ip })
        .collect();
    let records = veil_audit::read_records(&mesh.records_dir(&state.state_dir))?;
    let report = veil_audit::analyze(&pcap_path, &pods, &records)?;
    let grep_result = match grep {
        Some(text) => Some(veil_audit::grep(&pcap_path, text.as_bytes())?),
        None => None,
    };
    let unencrypted = report.unencrypted_pod_flows().len();
    if output == "json" {
        let mut v = report.to_json();
        if let (Some(text), Some(g), Some(obj)) = (grep, &grep_result, v.as_object_mut()) {
            obj.insert("grep".into(), serde_json::json!({ "text": text, "found": g.found,
                "flows": g.flows.iter().map(|(a, b)| format!("{a} -> {b}")).collect::<Vec<_>>() }));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", report.table());
        println!("{} flow(s), {} pod-to-pod flow(s) not mesh mTLS", report.flows.len(), unencrypted);
        if let (Some(text), Some(g)) = (grep, &grep_result) {
            if g.found {
                println!("grep: {text:?} FOUND in clear in {} flow(s):", g.flows.len());
                for (a, b) in &g.flows {
                    println!("  {a} -> {b}");
                }
            } else {
                println!("grep: {text:?} not found in any captured byte");
            }
        }
    }
    let mut ok = true;
    if expect_encrypted && unencrypted > 0 {
        eprintln!("audit failed: {unencrypted} pod-to-pod flow(s) are not mesh mTLS");
        ok = false;
    }
    if expect_encrypted && report.flows.iter().all(|f| !f.is_pod_to_pod()) {
        eprintln!("audit failed: no pod-to-pod traffic was captured, so nothing was proven; send traffic during the capture");
        ok = false;
    }
    if grep_result.as_ref().is_some_and(|g| g.found) {
        ok = false;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn tempfile_path() -> Result<PathBuf> {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    Ok(dir.join(format!("veil-audit-{pid}.pcap")))
}

/// `veil proxy`.
pub fn proxy() -> Result<ExitCode> {
    crate::agent::main()?;
    Ok(ExitCode::SUCCESS)
}
