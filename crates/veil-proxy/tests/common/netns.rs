//! Network namespaces for tests: a pair joined by a veth, Istio-style
//! interception rules in each, and threads that run a tokio runtime inside
//! one namespace (optionally as fsuid 1337, the proxy's uid).

use std::future::Future;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

static NEXT: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Deletes the pairs a test process left when it was killed before its
/// drops ran (`vpt<pid>-…` whose process is gone); once per test process.
fn remove_stale_pairs() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("vpt").and_then(|rest| rest.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", &name]);
        }
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Two namespaces `a` and `b` joined by a veth pair, deleted on drop.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
}

impl NetnsPair {
    /// Interception in both namespaces (a pod with a sidecar on each side).
    pub fn create() -> NetnsPair {
        Self::create_with(true)
    }

    /// Interception in `a` only: `b` holds plain servers outside the mesh
    /// (TLS origination tests).
    pub fn create_client_only() -> NetnsPair {
        Self::create_with(false)
    }

    fn create_with(intercept_b: bool) -> NetnsPair {
        SWEEP.call_once(remove_stale_pairs);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        // The whole pid names the namespaces (the stale-pair sweep reads it);
        // the veth names, inside the namespaces, take 5 digits of it.
        let full_pid = std::process::id();
        let pid = full_pid % 100_000;
        let pair = NetnsPair {
            a: format!("vpt{full_pid}-{n}a"),
            b: format!("vpt{full_pid}-{n}b"),
            ip_a: Ipv4Addr::new(10, 213, (n % 250) as u8, 1),
            ip_b: Ipv4Addr::new(10, 213, (n % 250) as u8, 2),
        };
        if let Err(e) = pair.setup(pid, n, intercept_b) {
            panic!("network namespace setup failed: {e}");
        }
        pair
    }

    fn setup(&self, pid: u32, n: u32, intercept_b: bool) -> Result<(), String> {
        let (va, vb) = (format!("vp{pid}x{n}a"), format!("vp{pid}x{n}b"));
        run(&["ip", "netns", "add", &self.a])?;
        run(&["ip", "netns", "add", &self.b])?;
        run(&["ip", "link", "add", &va, "netns", &self.a, "type", "veth", "peer", "name", &vb, "netns", &self.b])?;
        for (ns, dev, ip, gw) in [(&self.a, &va, self.ip_a, self.ip_b), (&self.b, &vb, self.ip_b, self.ip_a)] {
            run(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev])?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", ns, "route", "add", "default", "via", &gw.to_string()])?;
            if *ns == self.b && !intercept_b {
                continue;
            }
            let ipt = |rule: &str| {
                let mut args = vec!["ip", "netns", "exec", ns.as_str(), "iptables", "-w", "-t", "nat"];
                args.extend(rule.split(' '));
                run(&args)
            };
            ipt("-A OUTPUT -p tcp -m owner --uid-owner 1337 -j RETURN")?;
            ipt("-A OUTPUT -p tcp -d 127.0.0.1/32 -j RETURN")?;
            ipt("-A OUTPUT -p tcp -j REDIRECT --to-ports 15001")?;
            ipt("-A PREROUTING -p tcp --dport 15000:15021 -j RETURN")?;
            ipt("-A PREROUTING -p tcp -j REDIRECT --to-ports 15006")?;
        }
        Ok(())
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.a]);
        let _ = run(&["ip", "netns", "del", &self.b]);
    }
}

/// A current-thread tokio runtime on a thread inside a namespace.
pub struct NsRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    /// `fsuid`: Some(1337) makes the thread's sockets match `--uid-owner 1337`.
    pub fn start(ns: &str, fsuid: Option<u32>) -> NsRuntime {
        let path = format!("/run/netns/{ns}");
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            if let Some(uid) = fsuid {
                nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            handle_tx.send(rt.handle().clone()).expect("send handle");
            rt.block_on(async move {
                let _ = stop_rx.await;
            });
        });
        let handle = handle_rx.recv().expect("runtime handle");
        NsRuntime { handle, stop: Some(stop), thread: Some(thread) }
    }

    /// Runs `f` inside the namespace.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(f)
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
