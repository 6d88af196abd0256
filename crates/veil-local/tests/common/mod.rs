//! Shared helpers for the root-only integration tests: a cleanup guard, command runners,
//! and probes of what exists on the host.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Names and addresses unique to one test.
pub struct Names {
    pub prefix: String,
    pub bridge: String,
    pub subnet: u8,
    pub state_dir: PathBuf,
}

impl Names {
    pub fn new(tag: &str, subnet_base: u32) -> Names {
        let pid = std::process::id();
        let prefix = format!("vt{tag}{pid}");
        Names {
            bridge: format!("{prefix}br"),
            subnet: u8::try_from(subnet_base + pid % 120).unwrap(),
            state_dir: std::env::temp_dir().join(format!("veil-local-{prefix}")),
            prefix,
        }
    }

    pub fn netns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    pub fn ip(&self, last: u8) -> String {
        format!("10.251.{}.{last}", self.subnet)
    }
}

/// Tears everything down when the test ends, also on panic.
pub struct Guard<'a>(pub &'a Names);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = veil_local::teardown_with_grace(&self.0.state_dir, Duration::from_secs(1));
        let _ = veil_local::sweep(&self.0.prefix);
        let _ = std::fs::remove_dir_all(&self.0.state_dir);
    }
}

/// Runs a command; returns (success, stdout).
pub fn run(args: &[&str]) -> (bool, String) {
    let (first, rest) = args.split_first().unwrap();
    let out = Command::new(first).args(rest).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs a command inside `netns`.
pub fn in_ns(netns: &str, args: &[&str]) -> (bool, String) {
    let mut full = vec!["ip", "netns", "exec", netns];
    full.extend_from_slice(args);
    run(&full)
}

/// `curl` inside `netns`, optionally as `uid` via setpriv; bounded by 5 s.
pub fn curl(netns: &str, uid: Option<u32>, url: &str) -> (bool, String) {
    let uid_s = uid.map(|u| u.to_string()).unwrap_or_default();
    let mut args: Vec<&str> = Vec::new();
    if uid.is_some() {
        args.extend([
            "setpriv",
            "--reuid",
            &uid_s,
            "--regid",
            &uid_s,
            "--clear-groups",
            "--",
        ]);
    }
    args.extend([
        "curl",
        "-sS",
        "--connect-timeout",
        "2",
        "--max-time",
        "5",
        url,
    ]);
    in_ns(netns, &args)
}

pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Writes a TCP responder script: `responder.py PORT TEXT` answers each connection (at most
/// 200, for at most 120 s) with an HTTP/1.0 response whose body is TEXT.
pub fn write_responder(dir: &Path) -> PathBuf {
    let path = dir.join("responder.py");
    std::fs::write(
        &path,
        "import socket, sys, time\n\
         port, text = int(sys.argv[1]), sys.argv[2].encode()\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', port)); s.listen(16); s.settimeout(1.0)\n\
         deadline = time.time() + 120\n\
         for _ in range(200):\n\
         \x20   if time.time() > deadline: break\n\
         \x20   try: c, _ = s.accept()\n\
         \x20   except socket.timeout: continue\n\
         \x20   c.settimeout(2.0)\n\
         \x20   try: c.recv(4096)\n\
         \x20   except socket.timeout: pass\n\
         \x20   c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n' % len(text) + text)\n\
         \x20   c.close()\n",
    )
    .unwrap();
    path
}

pub fn responder_spec(
    dir: &Path,
    port: u16,
    text: &str,
    uid: Option<u32>,
) -> veil_local::ProcessSpec {
    veil_local::ProcessSpec {
        program: python().into(),
        args: vec![
            write_responder(dir).display().to_string(),
            port.to_string(),
            text.to_string(),
        ],
        uid,
        log_path: dir.join(format!("responder-{port}.log")),
        ..Default::default()
    }
}

pub fn netns_names(prefix: &str) -> Vec<String> {
    run(&["ip", "netns", "list"])
        .1
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

pub fn link_names(prefix: &str) -> Vec<String> {
    run(&["ip", "-o", "link", "show"])
        .1
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

pub fn forward_rules_mentioning(word: &str) -> Vec<String> {
    run(&["iptables", "-S", "FORWARD"])
        .1
        .lines()
        .filter(|l| l.contains(word))
        .map(String::from)
        .collect()
}

pub fn pid_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            .is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}
