//! Harness for the end-to-end tests: runs the real `veil` binary (as root)
//! on a copy of an example directory, with a private state directory, and
//! tears everything down even when a test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One mesh at a time: every `veil up` uses the bridge `veil0`.
static MESH_LOCK: Mutex<()> = Mutex::new(());

pub fn veil() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_veil"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn assert_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "end-to-end tests create network namespaces: run them as root"
    );
}

/// Copies `examples/<name>` into a temp dir so a test can edit it.
pub fn copy_example(name: &str) -> tempfile::TempDir {
    let dst = tempfile::tempdir().expect("tempdir");
    let src = repo_root().join("examples").join(name);
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst.path())
        .status()
        .expect("cp");
    assert!(status.success(), "copying {}", src.display());
    let _ = Command::new("chmod").arg("755").arg(dst.path()).status();
    dst
}

pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(
        text.contains(from),
        "{} does not contain {from:?}",
        path.display()
    );
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The machine-wide lock of the tests that run or check a mesh: a mutex for
/// the threads of this test binary, and an exclusive `flock` on a file for
/// other test binaries (every mesh uses the bridge `veil0`).
pub struct MeshLock {
    _file: nix::fcntl::Flock<std::fs::File>,
    _guard: MutexGuard<'static, ()>,
}

pub fn lock() -> MeshLock {
    let guard = MESH_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/veil-e2e.lock")
        .expect("open /tmp/veil-e2e.lock");
    let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock");
    MeshLock {
        _file: file,
        _guard: guard,
    }
}

/// A running `veil up`, stopped (and `veil down` run) on drop.
pub struct Mesh {
    pub child: Child,
    pub state: tempfile::TempDir,
    pub dir: PathBuf,
    pub output: Arc<Mutex<String>>,
    _lock: MeshLock,
}

impl Mesh {
    /// Starts `veil up DIR` and waits (≤ 180 s) for "mesh ready".
    pub fn up(dir: &Path) -> Mesh {
        Mesh::up_with_env(dir, &[])
    }

    /// [`Mesh::up`] with `env` set for `veil up` (and the proxies it passes it on to).
    pub fn up_with_env(dir: &Path, env: &[(&str, &str)]) -> Mesh {
        assert_root();
        let lock = lock();
        let state = tempfile::tempdir().expect("state dir");
        let _ = Command::new("chmod").arg("755").arg(state.path()).status();
        let mut child = Command::new(veil())
            .arg("up")
            .arg(dir)
            .arg("--state-dir")
            .arg(state.path())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn veil up");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    out.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&(line + "\n"));
                }
            });
        }
        let mut mesh = Mesh {
            child,
            state,
            dir: dir.to_path_buf(),
            output,
            _lock: lock,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if mesh.log().contains("mesh ready") {
                break;
            }
            if let Ok(Some(status)) = mesh.child.try_wait() {
                panic!("veil up exited ({status}) before ready:\n{}", mesh.log());
            }
            assert!(
                Instant::now() < deadline,
                "veil up not ready in 180 s:\n{}",
                mesh.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        mesh
    }

    pub fn log(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// The mesh state `veil up` wrote.
    pub fn state_json(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state.path().join("mesh.json")).expect("mesh.json");
        serde_json::from_str(&text).expect("mesh.json is JSON")
    }

    /// Host address of a published gateway port.
    pub fn published(&self, port: u16) -> String {
        let state = self.state_json();
        state["published"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["port"] == port))
            .and_then(|p| p["host"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("gateway port {port} not published:\n{}", self.log()))
    }

    pub fn netns(&self, pod: &str) -> String {
        let state = self.state_json();
        state["pods"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == pod))
            .and_then(|p| p["netns"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no pod {pod}"))
    }

    pub fn pod_ip(&self, pod: &str) -> String {
        let state = self.state_json();
        state["pods"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == pod))
            .and_then(|p| p["ip"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no pod {pod}"))
    }

    pub fn proxy_log(&self, ns: &str, pod: &str) -> String {
        std::fs::read_to_string(
            self.state
                .path()
                .join("logs")
                .join(format!("{ns}.{pod}.proxy.log")),
        )
        .unwrap_or_default()
    }

    /// Runs a command inside a pod's network namespace.
    pub fn exec(&self, pod: &str, args: &[&str]) -> Output {
        run(Command::new("ip")
            .arg("netns")
            .arg("exec")
            .arg(self.netns(pod))
            .args(args))
    }

    /// `veil audit` in the background for `secs` seconds.
    pub fn audit(&self, secs: u32, extra: &[&str]) -> Child {
        let child = Command::new(veil())
            .args(["audit", "--duration", &secs.to_string(), "--state-dir"])
            .arg(self.state.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn veil audit");
        // tcpdump needs a moment to attach.
        std::thread::sleep(Duration::from_millis(1500));
        child
    }

    /// Stops `veil up` as Ctrl-C does (SIGINT) and waits for it (≤ 60 s).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new(veil())
            .arg("down")
            .arg("--state-dir")
            .arg(self.state.path())
            .output();
    }
}

/// POSTs a person through the gateway; returns (status, body).
pub fn post_person(addr: &str, host: &str, name: &str, email: &str) -> (u16, String) {
    let out = run(Command::new("curl").args([
        "-s",
        "-m",
        "20",
        "-w",
        "\n%{http_code}",
        "-H",
        &format!("Host: {host}"),
        "--data-urlencode",
        &format!("name={name}"),
        "--data-urlencode",
        &format!("email={email}"),
        "--data-urlencode",
        "address=1 Loop Road",
        &format!("http://{addr}/"),
    ]));
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = body.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// What is left of any local mesh on the machine.
pub fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    let ns = run(Command::new("ip").args(["netns", "list"]));
    left.extend(
        String::from_utf8_lossy(&ns.stdout)
            .lines()
            .filter(|l| l.starts_with("veil-"))
            .map(|l| format!("netns {l}")),
    );
    let links = run(Command::new("ip").args(["-o", "link", "show"]));
    left.extend(
        String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .filter(|n| n.starts_with("veil"))
            .map(|n| format!("link {n}")),
    );
    let rules = run(&mut Command::new("iptables-save"));
    left.extend(
        String::from_utf8_lossy(&rules.stdout)
            .lines()
            .filter(|l| l.contains("veil"))
            .map(|l| format!("rule {l}")),
    );
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        left.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("veil-"))
                .map(|e| format!("dir {}", e.path().display())),
        );
    }
    left
}
