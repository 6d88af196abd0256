//! Test topology like a local mesh: two network namespaces (pods `a` and
//! `b`) whose veths are ports of a bridge, plus a python3 peer that runs a
//! one-shot TCP or TLS server/client inside a namespace.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const IP_A: &str = "10.77.0.1";
pub const IP_B: &str = "10.77.0.2";

fn run(args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Bridge + two namespaces; everything is deleted on drop.
pub struct Mesh {
    pub bridge: String,
    pub ns_a: String,
    pub ns_b: String,
    host_ends: [String; 2],
    pub dir: tempfile::TempDir,
}

impl Mesh {
    /// `tag` (one or two letters) keeps names unique across tests.
    pub fn new(tag: &str) -> Mesh {
        let pid = std::process::id();
        let mesh = Mesh {
            bridge: format!("vab{tag}{pid}"),
            ns_a: format!("veil-audit-{tag}a-{pid}"),
            ns_b: format!("veil-audit-{tag}b-{pid}"),
            host_ends: [format!("vah{tag}a{pid}"), format!("vah{tag}b{pid}")],
            dir: tempfile::tempdir().unwrap(),
        };
        run(&["ip", "link", "add", &mesh.bridge, "type", "bridge"]);
        run(&["ip", "link", "set", &mesh.bridge, "up"]);
        for ((ns, host), ip) in [&mesh.ns_a, &mesh.ns_b]
            .iter()
            .zip(&mesh.host_ends)
            .zip([IP_A, IP_B])
        {
            let peer = format!("{host}p");
            run(&["ip", "netns", "add", ns]);
            run(&[
                "ip", "link", "add", host, "type", "veth", "peer", "name", &peer,
            ]);
            run(&["ip", "link", "set", host, "master", &mesh.bridge]);
            run(&["ip", "link", "set", host, "up"]);
            run(&["ip", "link", "set", &peer, "netns", ns]);
            run(&["ip", "-n", ns, "link", "set", &peer, "name", "eth0"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let key = mesh.dir.path().join("key.pem");
        let cert = mesh.dir.path().join("cert.pem");
        run(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=b.test",
            "-days",
            "1",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        std::fs::write(mesh.script(), PEER_SCRIPT).unwrap();
        mesh
    }

    fn script(&self) -> PathBuf {
        self.dir.path().join("peer.py")
    }

    pub fn pcap(&self) -> PathBuf {
        self.dir.path().join("capture.pcap")
    }

    /// Runs a one-shot server in pod b on `port` (`mode`: plain or tls,
    /// serving ALPN `alpn`), then a client in pod a sending `message`.
    /// Returns the client's local address as the client saw it.
    pub fn exchange(&self, port: u16, mode: &str, alpn: &str, message: &str) -> SocketAddr {
        let dir = self.dir.path();
        let mut server = Command::new("ip")
            .args(["netns", "exec", &self.ns_b, "python3"])
            .arg(self.script())
            .args(["server", mode, &port.to_string(), alpn])
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = server.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(Duration::from_secs(15));
        if ready.as_deref().map(str::trim) != Ok("ready") {
            let _ = server.kill();
            let _ = server.wait();
            panic!("server did not start: {ready:?}");
        }
        let client = Command::new("ip")
            .args(["netns", "exec", &self.ns_a, "python3"])
            .arg(self.script())
            .args(["client", mode, IP_B, &port.to_string(), alpn, message])
            .output()
            .unwrap();
        wait_bounded(&mut server, Duration::from_secs(20));
        let out = String::from_utf8_lossy(&client.stdout).to_string();
        assert!(
            client.status.success(),
            "client: {out} {}",
            String::from_utf8_lossy(&client.stderr)
        );
        let mut words = out.split_whitespace();
        let local: SocketAddr = words.next().unwrap().parse().unwrap();
        let negotiated = words.next().unwrap();
        if mode == "tls" {
            assert_eq!(
                negotiated,
                alpn.rsplit(',').next().unwrap(),
                "negotiated ALPN: {out}"
            );
        }
        assert!(
            out.contains(&format!("ack {}", message.len() + 1)),
            "reply: {out}"
        );
        local
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "server failed: {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not exit within {limit:?}");
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for link in self.host_ends.iter().chain([&self.bridge]) {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

pub fn pods() -> Vec<veil_audit::PodAddress> {
    [("a", IP_A), ("b", IP_B)]
        .map(|(pod, ip)| veil_audit::PodAddress {
            pod: pod.into(),
            namespace: "default".into(),
            ip: ip.parse::<IpAddr>().unwrap(),
        })
        .to_vec()
}

pub fn server(port: u16) -> SocketAddr {
    SocketAddr::new(IP_B.parse().unwrap(), port)
}

const PEER_SCRIPT: &str = r#"
import socket, ssl, sys, time
role, mode = sys.argv[1], sys.argv[2]
if role == "server":
    port, alpn, cert, key = int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1)
    s.settimeout(20)
    print("ready", flush=True)
    conn, _ = s.accept()
    conn.settimeout(20)
    if mode == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols([alpn.split(",")[-1]])
        conn = ctx.wrap_socket(conn, server_side=True)
    data = b""
    for _ in range(1000):
        chunk = conn.recv(4096)
        data += chunk
        if not chunk or data.endswith(b"\n"):
            break
    conn.sendall(b"ack %d\n" % len(data))
    conn.close()
else:
    host, port, alpn, message = sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
    s = socket.create_connection((host, port), timeout=10)
    local = s.getsockname()
    negotiated = "-"
    if mode == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(alpn.split(","))
        s = ctx.wrap_socket(s, server_hostname="b.test")
        negotiated = s.selected_alpn_protocol()
    s.sendall(message.encode() + b"\n")
    reply = s.recv(4096)
    print("%s:%d %s %s" % (local[0], local[1], negotiated, reply.decode().strip()))
"#;
