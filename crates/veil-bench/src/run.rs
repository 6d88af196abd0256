//! One benchmark run: checks the machine, makes the certificates, brings up
//! `examples/bench` without sidecars (paths `direct`, `stunnel`, `haproxy`,
//! `external`) and with them (path `veil`), measures each path and the
//! control plane, and writes the report.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::control_plane::ControlPlaneResult;
use crate::figures::{PathKind, PathResult};
use crate::mesh::{prepare, Mesh};
use crate::process::{in_netns, output, Daemon};
use crate::procfs::Tracked;
use crate::report::{self, Report};
use crate::rounds::Values;
use crate::tunnel::{self, Certs, External, Tool};
use crate::workloads::{self, Settings};
use crate::BenchError;

/// How much to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    Quick,
    Smoke,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::Smoke => "smoke",
        }
    }
}

/// Options of `veil-bench run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub mode: Mode,
    /// The `veil` binary (`veil up`, and the sidecars it starts).
    pub veil: PathBuf,
    /// `examples/bench`.
    pub example: PathBuf,
    /// Where `<date>.md` and `<date>.json` go; not written when `None`.
    pub out: Option<PathBuf>,
    /// Only these paths (all when empty).
    pub only: Vec<String>,
    /// How many times every path is measured (the report gives medians).
    pub rounds: u32,
    /// What is special about this run, printed under the report's heading.
    pub note: Option<String>,
}

/// Most rounds `--rounds` accepts.
pub const MAX_ROUNDS: u32 = 9;

const LOCK: &str = "/run/veil-bench.lock";
const TOOLS: [&str; 6] = ["ip", "openssl", "wrk", "iperf3", "stunnel4", "haproxy"];

type Lock = nix::fcntl::Flock<std::fs::File>;

fn preflight() -> Result<Lock, BenchError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(BenchError::NotRoot);
    }
    for tool in TOOLS {
        let on_path = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !on_path {
            return Err(BenchError::Spawn { program: tool.into(), source: std::io::ErrorKind::NotFound.into() });
        }
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(LOCK)
        .map_err(|e| BenchError::io("open", LOCK, e))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| BenchError::Busy(LOCK.into()))?;
    if Path::new(crate::mesh::BRIDGE).exists() {
        return Err(BenchError::MeshRunning);
    }
    // 1000 idle connections through two proxies need more than 1024 descriptors.
    if let Ok((_, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    Ok(lock)
}

/// Lets many short connections reuse ports in TIME_WAIT (same for every
/// path). The ephemeral range stays above the proxies' 15xxx ports.
fn tune(netns: &str) {
    let mut c = in_netns(netns, "sysctl");
    c.args(["-qw", "net.ipv4.tcp_tw_reuse=1"]);
    let _ = output(c, "sysctl", Duration::from_secs(10));
}

fn first_line(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output();
    out.map(|o| {
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        text.lines().find(|l| l.contains(program.trim_end_matches('4')) || l.contains("HAProxy")).unwrap_or_default().trim().to_string()
    })
    .unwrap_or_default()
}

fn machine() -> BTreeMap<String, String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("unknown");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    [
        ("nproc", nproc.to_string()),
        ("cpu", model.trim().to_string()),
        ("kernel", kernel.trim().to_string()),
        ("stunnel", first_line("stunnel4", &["-version"])),
        ("haproxy", first_line("haproxy", &["-v"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

struct Ctx {
    opts: RunOptions,
    settings: Settings,
    work: PathBuf,
    bench_bin: PathBuf,
    certs: Certs,
}

impl Ctx {
    fn wants(&self, name: &str) -> bool {
        self.opts.only.is_empty() || self.opts.only.iter().any(|o| o == name)
    }

    fn measure(&self, name: &str, kind: PathKind, mesh: &Mesh, target: IpAddr, proxies: Vec<Tracked>) -> PathResult {
        eprintln!("bench: path {name}");
        let mut result = PathResult::new(name, kind);
        let path = workloads::Path { client_netns: mesh.client.netns.clone(), target, proxies, bench_bin: self.bench_bin.clone() };
        workloads::run(&path, &self.settings, &mut result);
        result
    }

    /// Measures a path whose proxies are `daemons` (checked alive before and after).
    fn measure_daemons(&self, name: &str, mesh: &Mesh, target: IpAddr, mut daemons: Vec<Daemon>) -> PathResult {
        std::thread::sleep(Duration::from_millis(300));
        let proxies = daemons.iter().map(|d| Tracked { label: d.label.clone(), pid: d.pid() }).collect();
        let mut r = self.measure(name, PathKind::Peer, mesh, target, proxies);
        for d in daemons.iter_mut() {
            if d.exited() {
                r.failures.push(format!("{} exited during the run; see {}", d.label, d.log.display()));
            }
        }
        r
    }

    fn plain_paths(&self, out: &mut Vec<PathResult>) -> Result<(), BenchError> {
        let dir = self.work.join("plain");
        prepare(&self.opts.example, &dir, false, &self.bench_bin)?;
        let mesh = Mesh::up(&self.opts.veil, &dir, &self.work.join("plain-state"))?;
        tune(&mesh.client.netns);
        tune(&mesh.server.netns);
        if self.wants("direct") {
            out.push(self.measure("direct", PathKind::Direct, &mesh, mesh.service_ip, Vec::new()));
        }
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for (tool, name) in [(Tool::Stunnel, "stunnel"), (Tool::Haproxy, "haproxy")] {
            if self.wants(name) {
                let daemons = tunnel::start(tool, &self.certs, &self.work, &mesh.client.netns, &mesh.server.netns, mesh.server.ip)?;
                out.push(self.measure_daemons(name, &mesh, local, daemons));
            }
        }
        if let Some(ext) = External::from_env()?.filter(|e| self.wants(&e.name) || self.wants("external")) {
            let env: Vec<(String, String)> = [
                ("BENCH_CLIENT_IP", mesh.client.ip.to_string()),
                ("BENCH_SERVER_IP", mesh.server.ip.to_string()),
                ("BENCH_SERVICE_IP", mesh.service_ip.to_string()),
                ("BENCH_CLIENT_NETNS", mesh.client.netns.clone()),
                ("BENCH_SERVER_NETNS", mesh.server.netns.clone()),
                ("BENCH_APP_PORTS", tunnel::APP_PORTS.map(|p| p.to_string()).join(" ")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let daemons = ext.start(&self.certs, &self.work, &env, &mesh.client.netns, &mesh.server.netns)?;
            out.push(self.measure_daemons(&ext.name, &mesh, ext.target.unwrap_or(mesh.server.ip), daemons));
        }
        Ok(())
    }

    /// Every selected path once; the Veil mesh first when `veil_first` (the
    /// rounds alternate, so neither kind of path always runs later).
    fn round(&self, veil_first: bool) -> Result<Vec<PathResult>, BenchError> {
        let mut paths = Vec::new();
        if veil_first && self.wants("veil") {
            paths.push(self.veil_path()?);
        }
        self.plain_paths(&mut paths)?;
        if !veil_first && self.wants("veil") {
            paths.push(self.veil_path()?);
        }
        paths.sort_by_key(|p| match p.kind {
            PathKind::Direct => 0,
            PathKind::Veil => 1,
            PathKind::Peer => 2,
        });
        Ok(paths)
    }

    fn veil_path(&self) -> Result<PathResult, BenchError> {
        let dir = self.work.join("mesh");
        prepare(&self.opts.example, &dir, true, &self.bench_bin)?;
        let mesh = Mesh::up(&self.opts.veil, &dir, &self.work.join("mesh-state"))?;
        tune(&mesh.client.netns);
        tune(&mesh.server.netns);
        let proxies: Vec<Tracked> = [("veil client sidecar", &mesh.client), ("veil server sidecar", &mesh.server)]
            .iter()
            .filter_map(|(label, pod)| pod.proxy_pid.map(|pid| Tracked { label: label.to_string(), pid }))
            .collect();
        if proxies.len() != 2 {
            return Err(BenchError::MeshNotReady("the bench pods have no sidecars (is istio-injection enabled in examples/bench?)".into()));
        }
        Ok(self.measure("veil", PathKind::Veil, &mesh, mesh.service_ip, proxies))
    }

    fn control_plane(&self) -> Result<ControlPlaneResult, BenchError> {
        eprintln!("bench: control plane");
        let (scale, runs) = match self.opts.mode {
            Mode::Full => ("1", "5"),
            Mode::Quick => ("1", "3"),
            Mode::Smoke => ("0.05", "1"),
        };
        let mut c = Command::new(&self.bench_bin);
        c.args(["control-plane", "--scale", scale, "--runs", runs]);
        let out = output(c, "veil-bench control-plane", Duration::from_secs(300))?;
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).map_err(|e| BenchError::Parse { program: "veil-bench control-plane".into(), detail: e.to_string() })
    }
}

fn date() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!("{:04}-{:02}-{:02} {:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
}

/// Runs the benchmark and writes the report (when `out` is set).
///
/// # Errors
/// Preflight errors (not root, another mesh or run, missing tools), a mesh
/// that does not start, and [`BenchError::Incomplete`] when a figure is
/// missing or a phase failed; the report then goes to the kept work
/// directory, not to `out`.
pub fn run(opts: RunOptions) -> Result<Report, BenchError> {
    let _lock = preflight()?;
    let work_dir = tempfile::Builder::new().prefix("veil-bench.").tempdir().map_err(|e| BenchError::io("create", "/tmp", e))?;
    let work = work_dir.path().to_path_buf();
    let bench_bin = std::env::current_exe().map_err(|e| BenchError::io("find", "veil-bench", e))?;
    let certs = Certs::make(&work.join("certs"))?;
    let settings = match opts.mode {
        Mode::Full => Settings::full(),
        Mode::Quick => Settings::quick(),
        Mode::Smoke => Settings::smoke(),
    };
    if !(1..=MAX_ROUNDS).contains(&opts.rounds) {
        return Err(BenchError::Usage(format!("--rounds {} is outside 1..={MAX_ROUNDS}", opts.rounds)));
    }
    // Before any mesh runs, on a quiet machine: the floor under every proxy's
    // fixed-rate figures (see wakeup.rs), printed with the machine's facts.
    let wakeups = crate::wakeup::measure(settings.wakeup_round_trips, Duration::from_secs(2));
    let ctx = Ctx { opts, settings, work, bench_bin, certs };
    let mut rounds = Vec::new();
    for round in 0..ctx.opts.rounds {
        if ctx.opts.rounds > 1 {
            eprintln!("bench: round {} of {}", round + 1, ctx.opts.rounds);
        }
        rounds.push(ctx.round(round % 2 == 1)?);
    }
    if rounds.iter().all(Vec::is_empty) {
        return Err(BenchError::Usage(format!("no path selected by --only {}; set BENCH_EXTERNAL_* for external", ctx.opts.only.join(","))));
    }
    let values = Values::new(&rounds);
    let control_plane = ctx.control_plane().map_err(|e| eprintln!("bench: control plane: {e}")).ok();
    let external = External::from_env()?.map(|e| e.name);
    let s = &ctx.settings;
    let mut report = Report {
        date: date(),
        mode: ctx.opts.mode.name().into(),
        note: ctx.opts.note.clone(),
        machine: machine(),
        workloads: vec![
            format!("HTTP/1.1 GET 1 KiB at {} rps over {} connections for {} s (open loop)", s.http_rate, s.http_connections, s.http_duration.as_secs_f64()),
            format!("wrk {} threads × {} connections for {} s", s.wrk_threads, s.wrk_connections, s.wrk_duration.as_secs().max(1)),
            format!("TCP echo {} × 64 B round trips", s.echo_count),
            format!("iperf3 {} s", s.iperf_duration.as_secs().max(1)),
            format!("new connections for {} s from {} loops (connect, 1 B echo, close)", s.connect_duration.as_secs_f64(), s.connect_workers),
            format!("{} idle connections", s.idle_connections),
        ],
        ratios: report::ratios(&values),
        targets: crate::targets::check(&values, ctx.settings.http_rate, external.as_deref(), control_plane.as_ref()),
        rounds,
        control_plane,
    };
    report.machine.insert("mode".into(), report.mode.clone());
    report.machine.insert("wake-up round trip".into(), wakeups.describe());
    let missing = report::missing(&report);
    if !missing.is_empty() {
        println!("{}", report::markdown(&report));
        let kept = work_dir.keep();
        write(&Some(kept.clone()), &report)?;
        return Err(BenchError::Incomplete(format!("{}; report, logs and configs kept in {}", missing.join("; "), kept.display())));
    }
    write(&ctx.opts.out, &report)?;
    Ok(report)
}

fn write(out: &Option<PathBuf>, r: &Report) -> Result<(), BenchError> {
    let Some(dir) = out else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| BenchError::io("create", dir, e))?;
    let stem = r.date.replace([' ', ':'], "-");
    let md = dir.join(format!("{stem}.md"));
    std::fs::write(&md, report::markdown(r)).map_err(|e| BenchError::io("write", &md, e))?;
    let json = dir.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(r).map_err(|e| BenchError::Parse { program: "report".into(), detail: e.to_string() })?;
    std::fs::write(&json, text).map_err(|e| BenchError::io("write", &json, e))?;
    eprintln!("bench: wrote {} and {}", md.display(), json.display());
    Ok(())
}
