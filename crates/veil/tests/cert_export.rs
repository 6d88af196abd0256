//! `veil cert export` (Istio's OUTPUT_CERTS for software outside the mesh):
//! the files it writes let a plain `openssl s_client` speak mesh mTLS to a
//! STRICT workload, and `--watch` rewrites them on rotation.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn exported_certificate_speaks_mesh_mtls_to_a_strict_workload() {
    let dir = copy_example("pii-demo");
    let mesh = Mesh::up(dir.path());
    let out = tempfile::tempdir().expect("tempdir");
    let certs = out.path().join("certs");
    let export = run(Command::new(veil())
        .args(["cert", "export", "--identity", "istio-system/enroute", "--dir"])
        .arg(&certs)
        .arg("--state-dir")
        .arg(mesh.state_dir()));
    assert!(export.status.success(), "{}", text(&export));
    for f in ["key.pem", "cert-chain.pem", "root-cert.pem"] {
        let mode = std::fs::metadata(certs.join(f)).expect(f).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let verify = run(Command::new("openssl").args(["verify", "-CAfile"]).arg(certs.join("root-cert.pem")).arg(certs.join("cert-chain.pem")));
    assert!(verify.status.success(), "{}", text(&verify));
    let san = run(Command::new("openssl").args(["x509", "-noout", "-ext", "subjectAltName", "-in"]).arg(certs.join("cert-chain.pem")));
    assert!(text(&san).contains("URI:spiffe://cluster.local/ns/istio-system/sa/enroute"), "{}", text(&san));

    // A third-party client with the exported files reaches STRICT MariaDB over mesh mTLS.
    let target = format!("{}:3306", mesh.pod_ip("mysql-server"));
    let s_client = |with_cert: bool| {
        let mut cmd = Command::new("timeout");
        cmd.args(["3", "openssl", "s_client", "-ign_eof", "-connect", &target, "-alpn", "istio", "-tls1_3", "-CAfile"])
            .arg(certs.join("root-cert.pem"));
        if with_cert {
            cmd.arg("-cert").arg(certs.join("cert-chain.pem")).arg("-key").arg(certs.join("key.pem"));
        }
        let out = cmd.stdin(Stdio::null()).output().expect("s_client");
        text(&out)
    };
    let ok = s_client(true);
    assert!(ok.contains("MariaDB"), "MariaDB's greeting arrives through mesh mTLS:\n{ok}");
    assert!(ok.contains("ALPN protocol: istio"), "{ok}");
    // Control: the same client without the exported certificate gets nothing from MariaDB.
    let refused = s_client(false);
    assert!(!refused.contains("MariaDB"), "{refused}");

    // --watch rewrites the files at half-life.
    let mut watch = Command::new(veil())
        .args(["cert", "export", "--identity", "istio-system/enroute", "--ttl", "4", "--watch", "--dir"])
        .arg(&certs)
        .arg("--state-dir")
        .arg(mesh.state_dir())
        .stdout(Stdio::null())
        .spawn()
        .expect("watch");
    std::thread::sleep(Duration::from_millis(500));
    let first = std::fs::read_to_string(certs.join("cert-chain.pem")).expect("chain");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rotated = false;
    while Instant::now() < deadline && !rotated {
        std::thread::sleep(Duration::from_millis(200));
        rotated = std::fs::read_to_string(certs.join("cert-chain.pem")).is_ok_and(|c| c != first);
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(watch.id() as i32), nix::sys::signal::Signal::SIGINT);
    let _ = watch.wait();
    assert!(rotated, "cert-chain.pem rewritten within 10 s with --ttl 4");
}
