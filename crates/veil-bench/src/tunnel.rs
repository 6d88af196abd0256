//! The peers built from the user's usual tools: a two-hop mutual-TLS tunnel
//! (client side listening on the client pod's loopback, server side on the
//! server pod's address) with stunnel or HAProxy, ECDSA P-256 certificates
//! made with openssl, TLS 1.3 only. And `external`: any other proxy pair,
//! from two shell commands.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{in_netns, output, Daemon};
use crate::BenchError;

/// The application ports of the server pod: HTTP, TCP echo, iperf3.
pub const APP_PORTS: [u16; 3] = [8080, 9000, 5201];
/// The TLS port a tunnel's server side listens on for an application port.
pub fn tls_port(app: u16) -> u16 {
    app + 10_000
}

/// Where the certificates are: `ca.pem`, `server.pem`/`server.key`,
/// `client.pem`/`client.key`, and `server.both.pem`/`client.both.pem`
/// (certificate then key, for HAProxy).
#[derive(Debug, Clone)]
pub struct Certs {
    pub dir: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) -> Result<(), BenchError> {
    let mut c = Command::new("openssl");
    c.args(args).current_dir(dir);
    output(c, "openssl", Duration::from_secs(30)).map(|_| ())
}

impl Certs {
    /// Makes a CA and a server and a client certificate (ECDSA P-256, 2 days).
    ///
    /// # Errors
    /// [`BenchError::Tool`] when openssl fails, [`BenchError::Io`] on files.
    pub fn make(dir: &Path) -> Result<Certs, BenchError> {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::io("create", dir, e))?;
        let key = |name: &str| openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name], dir);
        key("ca.key")?;
        openssl(&["req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=veil-bench-ca", "-days", "2", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir)?;
        for (name, eku) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let k = format!("{name}.key");
            key(&k)?;
            openssl(&["req", "-x509", "-new", "-key", &k, "-subj", &format!("/CN=bench-{name}"), "-days", "2",
                "-CA", "ca.pem", "-CAkey", "ca.key", "-out", &format!("{name}.pem"),
                "-addext", &format!("subjectAltName=DNS:bench-{name}"), "-addext", "basicConstraints=CA:FALSE",
                "-addext", &format!("extendedKeyUsage={eku}")], dir)?;
            let both = [dir.join(format!("{name}.pem")), dir.join(&k)]
                .iter()
                .map(|p| std::fs::read_to_string(p).map_err(|e| BenchError::io("read", p, e)))
                .collect::<Result<Vec<_>, _>>()?
                .concat();
            let p = dir.join(format!("{name}.both.pem"));
            std::fs::write(&p, both).map_err(|e| BenchError::io("write", &p, e))?;
        }
        Ok(Certs { dir: dir.to_path_buf() })
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Which tunnel tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Stunnel,
    Haproxy,
}

/// stunnel configuration of one side (`server_ip` is where the client side connects).
pub fn stunnel_config(certs: &Certs, client_side: bool, server_ip: IpAddr) -> String {
    let side = if client_side { "client" } else { "server" };
    let mut c = String::from("foreground = yes\npid =\nsyslog = no\ndebug = 3\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n");
    for port in APP_PORTS {
        let (accept, connect) = if client_side {
            (format!("127.0.0.1:{port}"), format!("{server_ip}:{}", tls_port(port)))
        } else {
            (format!("{server_ip}:{}", tls_port(port)), format!("127.0.0.1:{port}"))
        };
        c.push_str(&format!(
            "[p{port}]\nclient = {}\naccept = {accept}\nconnect = {connect}\ncert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\nrequireCert = yes\nsslVersionMin = TLSv1.3\n",
            if client_side { "yes" } else { "no" },
            certs.path(&format!("{side}.pem")),
            certs.path(&format!("{side}.key")),
            certs.path("ca.pem"),
        ));
        if client_side {
            c.push_str("checkHost = bench-server\n");
        }
    }
    c
}

/// HAProxy configuration of one side (TCP mode, TLS 1.3 only, mutual).
pub fn haproxy_config(certs: &Certs, client_side: bool, server_ip: IpAddr) -> String {
    // Two descriptors per connection; HAProxy refuses to start above the limit.
    let fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(4096, |(_, hard)| hard);
    let maxconn = (fds.saturating_sub(200) / 2).clamp(1100, 10_000);
    let mut c = format!(
        "global\n  maxconn {maxconn}\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n  ssl-default-server-options ssl-min-ver TLSv1.3\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n",
    );
    for port in APP_PORTS {
        if client_side {
            c.push_str(&format!(
                "listen p{port}\n  bind 127.0.0.1:{port}\n  server s {server_ip}:{} ssl crt {} ca-file {} verify required verifyhost bench-server\n",
                tls_port(port),
                certs.path("client.both.pem"),
                certs.path("ca.pem"),
            ));
        } else {
            c.push_str(&format!(
                "listen p{port}\n  bind {server_ip}:{} ssl crt {} ca-file {} verify required\n  server app 127.0.0.1:{port}\n",
                tls_port(port),
                certs.path("server.both.pem"),
                certs.path("ca.pem"),
            ));
        }
    }
    c
}

/// Starts both sides of a tunnel in the pods' namespaces (server side first).
///
/// # Errors
/// [`BenchError::Io`] writing a config, [`BenchError::Spawn`] starting a tool.
pub fn start(tool: Tool, certs: &Certs, work: &Path, client_netns: &str, server_netns: &str, server_ip: IpAddr) -> Result<Vec<Daemon>, BenchError> {
    let mut out = Vec::new();
    for (client_side, netns) in [(false, server_netns), (true, client_netns)] {
        let side = if client_side { "client" } else { "server" };
        let (name, text) = match tool {
            Tool::Stunnel => ("stunnel", stunnel_config(certs, client_side, server_ip)),
            Tool::Haproxy => ("haproxy", haproxy_config(certs, client_side, server_ip)),
        };
        let cfg = work.join(format!("{name}-{side}.conf"));
        std::fs::write(&cfg, text).map_err(|e| BenchError::io("write", &cfg, e))?;
        let mut cmd = match tool {
            Tool::Stunnel => in_netns(netns, "stunnel4"),
            Tool::Haproxy => {
                let mut c = in_netns(netns, "haproxy");
                c.arg("-db").arg("-f");
                c
            }
        };
        cmd.arg(&cfg);
        out.push(Daemon::start(cmd, &format!("{name} {side}"), &work.join(format!("{name}-{side}.log")))?);
    }
    Ok(out)
}

/// The `external` path, from the environment:
/// `BENCH_EXTERNAL_SERVER`, `BENCH_EXTERNAL_CLIENT` (shell commands run in the
/// server and client pod), `BENCH_EXTERNAL_NAME` (default `external`),
/// `BENCH_EXTERNAL_TARGET` (the address the load dials; default the server pod's).
#[derive(Debug, Clone)]
pub struct External {
    pub name: String,
    pub server_cmd: String,
    pub client_cmd: String,
    pub target: Option<IpAddr>,
}

impl External {
    /// Reads the environment; `None` when the two commands are not both set.
    ///
    /// # Errors
    /// [`BenchError::Usage`] when `BENCH_EXTERNAL_TARGET` is not an IP address.
    pub fn from_env() -> Result<Option<External>, BenchError> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let (Some(server_cmd), Some(client_cmd)) = (get("BENCH_EXTERNAL_SERVER"), get("BENCH_EXTERNAL_CLIENT")) else {
            return Ok(None);
        };
        let target = match get("BENCH_EXTERNAL_TARGET") {
            Some(t) => Some(t.parse().map_err(|_| BenchError::Usage(format!("BENCH_EXTERNAL_TARGET={t} is not an IP address")))?),
            None => None,
        };
        Ok(Some(External { name: get("BENCH_EXTERNAL_NAME").unwrap_or_else(|| "external".into()), server_cmd, client_cmd, target }))
    }

    /// Starts both commands (`sh -c`) with `BENCH_*` variables describing the pods.
    ///
    /// # Errors
    /// [`BenchError::Spawn`] when `sh` cannot start.
    pub fn start(&self, certs: &Certs, work: &Path, env: &[(String, String)], client_netns: &str, server_netns: &str) -> Result<Vec<Daemon>, BenchError> {
        let mut out = Vec::new();
        for (side, netns, cmd_text) in [("server", server_netns, &self.server_cmd), ("client", client_netns, &self.client_cmd)] {
            let mut cmd = in_netns(netns, "sh");
            cmd.arg("-c").arg(cmd_text).env("BENCH_CERTS", &certs.dir).envs(env.iter().map(|(k, v)| (k, v)));
            out.push(Daemon::start(cmd, &format!("{} {side}", self.name), &work.join(format!("external-{side}.log")))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_p256_and_both_haproxy_sides_accept_their_config() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let certs = match Certs::make(dir.path()) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let text = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(dir.path().join("client.pem"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        assert!(text.contains("prime256v1") && text.contains("TLS Web Client Authentication"), "{text}");
        let ip: IpAddr = [10, 0, 0, 2].into();
        for client_side in [false, true] {
            let cfg = dir.path().join(format!("h{client_side}.cfg"));
            assert!(std::fs::write(&cfg, haproxy_config(&certs, client_side, ip)).is_ok());
            let out = std::process::Command::new("haproxy").arg("-c").arg("-f").arg(&cfg).output();
            let ok = out.as_ref().is_ok_and(|o| o.status.success());
            assert!(ok, "haproxy -c rejects the {} side: {out:?}", if client_side { "client" } else { "server" });
        }
        let broken = dir.path().join("broken.cfg");
        assert!(std::fs::write(&broken, haproxy_config(&certs, true, ip).replace("client.both.pem", "absent.pem")).is_ok());
        let out = std::process::Command::new("haproxy").arg("-c").arg("-f").arg(&broken).output();
        assert!(out.is_ok_and(|o| !o.status.success()), "the check must fail for a missing certificate");
        let stunnel = stunnel_config(&certs, true, ip);
        assert!(stunnel.contains("sslVersionMin = TLSv1.3") && stunnel.contains("verifyChain = yes"));
        assert_eq!(stunnel.matches("accept = 127.0.0.1:").count(), APP_PORTS.len());
    }
}
