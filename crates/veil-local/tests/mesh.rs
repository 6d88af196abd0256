//! End to end (needs root): bridge, three hosts, names, sidecar interception, ClusterIP
//! rules, edge link + port forward, then a teardown that leaves nothing behind.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    curl, forward_rules_mentioning, in_ns, link_names, netns_names, pid_running, Guard, Names,
};
use veil_local::{
    install_cluster_ip_rules, install_sidecar_interception, Bridge, ClusterIpRule, EdgeLink, Host,
    InterceptionSettings, Ipv4Cidr, Journal,
};

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

#[test]
fn mesh_on_one_machine_and_full_teardown() {
    let names = Names::new("m", 0);
    let _guard = Guard(&names);
    let journal = Journal::open(&names.state_dir).unwrap();
    let (a, b, c) = (names.netns("a"), names.netns("b"), names.netns("c"));
    let gateway: Ipv4Addr = names.ip(1).parse().unwrap();

    let bridge = Bridge::create(
        &journal,
        &names.bridge,
        cidr(&format!("{}/25", names.ip(1))),
    )
    .unwrap();
    let host_a = Host::create(
        &journal,
        &a,
        &bridge,
        cidr(&format!("{}/25", names.ip(10))),
        gateway,
    )
    .unwrap();
    let host_b = Host::create(
        &journal,
        &b,
        &bridge,
        cidr(&format!("{}/25", names.ip(11))),
        gateway,
    )
    .unwrap();
    let host_c = Host::create(
        &journal,
        &c,
        &bridge,
        cidr(&format!("{}/25", names.ip(12))),
        gateway,
    )
    .unwrap();
    let b_ip: IpAddr = names.ip(11).parse().unwrap();
    let svc_names = vec![
        "b-svc".to_string(),
        "b-svc.demo".into(),
        "b-svc.demo.svc.cluster.local".into(),
    ];
    for host in [&host_a, &host_c] {
        host.write_hosts(&journal, &[(b_ip, svc_names.clone())])
            .unwrap();
    }
    assert!(host_a.veth.len() <= 15 && host_a.veth.starts_with(&names.prefix));
    assert_ne!(host_a.veth, host_b.veth);

    // B serves HTTP; A reaches it by every form of the Service name.
    let www = names.state_dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from b").unwrap();
    let server = veil_local::spawn(
        &journal,
        &b,
        &veil_local::ProcessSpec {
            program: common::python().into(),
            args: [
                "-m",
                "http.server",
                "8080",
                "--bind",
                "0.0.0.0",
                "--directory",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([www.display().to_string()])
            .collect(),
            log_path: names.state_dir.join("b.log"),
            ..Default::default()
        },
    )
    .unwrap();
    veil_local::wait_tcp_ready(&b, b_ip, 8080, Duration::from_secs(15)).unwrap();
    for name in &svc_names {
        assert_eq!(
            curl(&a, None, &format!("http://{name}:8080/")),
            (true, "hello from b".into()),
            "{name}"
        );
    }
    let started = Instant::now();
    assert!(
        !curl(&a, None, "http://not-a-service:8080/").0,
        "unknown names must not resolve"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "lookup of an unknown name must fail fast"
    );

    // Sidecar interception in A: root's traffic goes to 15001, uid 1337's goes straight out.
    install_sidecar_interception(&a, &InterceptionSettings::default()).unwrap();
    install_sidecar_interception(&a, &InterceptionSettings::default()).unwrap();
    let saved = in_ns(&a, &["iptables-save", "-t", "nat"]).1;
    for rule in [
        "-A PREROUTING -p tcp -j VEIL_INBOUND",
        "-A OUTPUT -p tcp -j VEIL_OUTPUT",
        "-A VEIL_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
        "-A VEIL_INBOUND -i lo -p tcp -j RETURN",
        "-A VEIL_INBOUND -p tcp -j REDIRECT --to-ports 15006",
        "-A VEIL_OUTPUT -p tcp -m owner --uid-owner 1337 -j RETURN",
        "-A VEIL_OUTPUT -p tcp -m owner --gid-owner 1337 -j RETURN",
        "-A VEIL_OUTPUT -d 127.0.0.1/32 -p tcp -j RETURN",
        "-A VEIL_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
    ] {
        assert_eq!(saved.matches(rule).count(), 1, "{rule} once in:\n{saved}");
    }
    let outbound = veil_local::spawn(
        &journal,
        &a,
        &common::responder_spec(&names.state_dir, 15001, "intercepted", Some(1337)),
    )
    .unwrap();
    let inbound = veil_local::spawn(
        &journal,
        &a,
        &common::responder_spec(&names.state_dir, 15006, "inbound", None),
    )
    .unwrap();
    veil_local::wait_tcp_ready(
        &a,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        15001,
        Duration::from_secs(15),
    )
    .unwrap();
    veil_local::wait_tcp_ready(
        &a,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        15006,
        Duration::from_secs(15),
    )
    .unwrap();
    assert_eq!(
        curl(&a, None, "http://b-svc:8080/"),
        (true, "intercepted".into())
    );
    assert_eq!(
        curl(&a, Some(1337), "http://b-svc:8080/"),
        (true, "hello from b".into())
    );
    assert_eq!(
        curl(&c, None, &format!("http://{}:9999/", names.ip(10))),
        (true, "inbound".into())
    );

    // C has no sidecar: a virtual ClusterIP works only once the DNAT rules are there.
    let cluster_ip: Ipv4Addr = names.ip(130).parse().unwrap();
    let url = format!("http://{cluster_ip}:80/");
    assert!(
        !curl(&c, None, &url).0,
        "ClusterIP must not answer before the rules"
    );
    let rule = ClusterIpRule {
        cluster_ip,
        port: 80,
        endpoint_ip: names.ip(11).parse().unwrap(),
        target_port: 8080,
    };
    install_cluster_ip_rules(&c, &[rule.clone(), rule]).unwrap();
    assert!(in_ns(&c, &["iptables-save", "-t", "nat"])
        .1
        .contains("--mode random"));
    for _ in 0..3 {
        assert_eq!(curl(&c, None, &url), (true, "hello from b".into()));
    }

    // Edge link + forward: B's server on the host's loopback, off the bridge.
    let edge = EdgeLink::create(
        &journal,
        &b,
        cidr(&format!("{}/30", names.ip(201))),
        cidr(&format!("{}/30", names.ip(202))),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let target = SocketAddr::new(IpAddr::V4(edge.ns_addr.addr), 8080);
    let fwd = runtime
        .block_on(veil_local::forward(
            &journal,
            "127.0.0.1:0".parse().unwrap(),
            target,
        ))
        .unwrap();
    let (ok, body) = common::run(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        &format!("http://{}/", fwd.local_addr()),
    ]);
    assert_eq!((ok, body.as_str()), (true, "hello from b"));

    // Control: everything exists and is reported live before teardown.
    let pids = [server.pid(), outbound.pid(), inbound.pid()];
    assert!(pids.iter().all(|p| pid_running(*p)));
    assert_eq!(netns_names(&names.prefix).len(), 3);
    assert!(
        link_names(&names.prefix).len() >= 5,
        "{:?}",
        link_names(&names.prefix)
    );
    assert_eq!(forward_rules_mentioning(&names.bridge).len(), 1);
    assert!(Path::new("/etc/netns").join(&a).is_dir());
    let live = veil_local::list_live(&names.state_dir).unwrap();
    assert_eq!(
        live.iter()
            .filter(|i| i.live && matches!(i.entry, veil_local::Entry::Process { .. }))
            .count(),
        3
    );

    drop(fwd);
    drop(runtime);
    let report = veil_local::teardown_with_grace(&names.state_dir, Duration::from_secs(2)).unwrap();
    assert!(report.failed.is_empty(), "{report}");
    assert!(report.removed.len() >= 12, "{report}");
    assert_nothing_left(&names, &pids, &[&a, &b, &c]);
    assert!(
        !journal.path().exists(),
        "a clean teardown empties the journal"
    );
    let again = veil_local::teardown(&names.state_dir).unwrap();
    assert!(again.removed.is_empty() && again.failed.is_empty());
    drop((server, outbound, inbound));
}

fn assert_nothing_left(names: &Names, pids: &[u32], netns: &[&str]) {
    assert!(
        netns_names(&names.prefix).is_empty(),
        "{:?}",
        netns_names(&names.prefix)
    );
    assert!(
        link_names(&names.prefix).is_empty(),
        "{:?}",
        link_names(&names.prefix)
    );
    assert!(forward_rules_mentioning(&names.bridge).is_empty());
    for ns in netns {
        assert!(!Path::new("/etc/netns").join(ns).exists(), "{ns}");
    }
    for pid in pids {
        assert!(!pid_running(*pid), "pid {pid} still running");
    }
    let live = veil_local::list_live(&names.state_dir).unwrap();
    assert!(live.iter().all(|i| !i.live), "{live:?}");
}
