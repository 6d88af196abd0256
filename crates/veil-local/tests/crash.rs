//! Crash recovery (needs root): handles are dropped without cleanup, the journal ends in a
//! torn line, one process was never journaled; `teardown` from the journal file alone must
//! still remove everything. Then `sweep` removes unjournaled leftovers by name.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use common::{forward_rules_mentioning, link_names, netns_names, pid_running, run, Guard, Names};
use veil_local::{Bridge, Host, Ipv4Cidr, Journal};

#[test]
fn teardown_from_the_journal_alone_after_a_crash() {
    let names = Names::new("c", 120);
    let _guard = Guard(&names);
    let netns = names.netns("x");
    let pids = {
        let journal = Journal::open(&names.state_dir).unwrap();
        let bridge_addr: Ipv4Cidr = format!("{}/25", names.ip(1)).parse().unwrap();
        let bridge = Bridge::create(&journal, &names.bridge, bridge_addr).unwrap();
        let pod: Ipv4Cidr = format!("{}/25", names.ip(10)).parse().unwrap();
        let host = Host::create(&journal, &netns, &bridge, pod, bridge_addr.addr).unwrap();
        host.write_hosts(&journal, &[(IpAddr::V4(pod.addr), vec!["x-svc".into()])])
            .unwrap();
        let root = veil_local::spawn(
            &journal,
            &netns,
            &common::responder_spec(&names.state_dir, 7001, "root", None),
        )
        .unwrap();
        let proxy = veil_local::spawn(
            &journal,
            &netns,
            &common::responder_spec(&names.state_dir, 7002, "proxy", Some(1337)),
        )
        .unwrap();
        // Started but never journaled: a crash between fork and the journal write.
        let spec = common::responder_spec(&names.state_dir, 7003, "orphan", None);
        let orphan = std::process::Command::new("ip")
            .args(["netns", "exec", &netns, common::python()])
            .args(&spec.args)
            .process_group(0)
            .spawn()
            .unwrap();
        for port in [7001, 7002, 7003] {
            veil_local::wait_tcp_ready(
                &netns,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
                Duration::from_secs(15),
            )
            .unwrap();
        }
        let pids = [root.pid(), proxy.pid(), orphan.id()];
        drop((bridge, host, root, proxy, orphan));
        pids
    };
    // A torn last line, as if the crash came mid-write.
    let journal_file = names.state_dir.join(veil_local::journal::JOURNAL_FILE);
    let mut text = std::fs::read_to_string(&journal_file).unwrap();
    text.push_str("{\"kind\":\"link\",\"na");
    std::fs::write(&journal_file, text).unwrap();

    // Control: all of it is there.
    assert!(pids.iter().all(|p| pid_running(*p)));
    assert_eq!(netns_names(&names.prefix), vec![netns.clone()]);
    assert_eq!(
        link_names(&names.prefix).len(),
        2,
        "{:?}",
        link_names(&names.prefix)
    );
    assert_eq!(forward_rules_mentioning(&names.bridge).len(), 1);
    assert!(Path::new("/etc/netns").join(&netns).is_dir());
    let live = veil_local::list_live(&names.state_dir).unwrap();
    assert_eq!(live.iter().filter(|i| i.live).count(), 7, "{live:?}");

    let report = veil_local::teardown_with_grace(&names.state_dir, Duration::from_secs(2)).unwrap();
    assert!(report.failed.is_empty(), "{report}");
    assert_eq!(report.removed.len(), 7, "{report}");
    assert!(
        pids.iter().all(|p| !pid_running(*p)),
        "a process survived teardown"
    );
    assert!(netns_names(&names.prefix).is_empty());
    assert!(link_names(&names.prefix).is_empty());
    assert!(forward_rules_mentioning(&names.bridge).is_empty());
    assert!(!Path::new("/etc/netns").join(&netns).exists());
    assert!(veil_local::list_live(&names.state_dir).unwrap().is_empty());
}

#[test]
fn sweep_removes_unjournaled_leftovers_by_prefix() {
    let names = Names::new("s", 240 - 120);
    let _guard = Guard(&names);
    let netns = names.netns("z");
    let other = format!("vtq{}-z", std::process::id());
    assert!(run(&["ip", "netns", "add", &netns]).0);
    assert!(run(&["ip", "netns", "add", &other]).0);
    assert!(run(&["ip", "link", "add", &names.bridge, "type", "bridge"]).0);
    let rule = [
        "-i",
        &names.bridge,
        "-o",
        &names.bridge,
        "-m",
        "comment",
        "--comment",
        "veil",
        "-j",
        "ACCEPT",
    ];
    let mut insert = vec!["iptables", "-I", "FORWARD"];
    insert.extend(rule);
    assert!(run(&insert).0);
    std::fs::create_dir_all(Path::new("/etc/netns").join(&netns)).unwrap();

    // A name that exists is refused before anything is journaled.
    let journal = Journal::open(&names.state_dir).unwrap();
    let clash = Bridge::create(&journal, &names.bridge, "10.251.240.1/25".parse().unwrap());
    assert!(
        matches!(clash, Err(veil_local::LocalError::Exists { .. })),
        "{clash:?}"
    );
    assert!(journal.entries().unwrap().is_empty());

    let removed = veil_local::sweep(&names.prefix).unwrap();
    let other_still_there = netns_names(&other) == vec![other.clone()];
    let _ = run(&["ip", "netns", "del", &other]);
    assert!(
        other_still_there,
        "sweep must not touch names outside its prefix"
    );
    assert_eq!(removed.len(), 4, "{removed:?}");
    assert!(netns_names(&names.prefix).is_empty());
    assert!(link_names(&names.prefix).is_empty());
    assert!(forward_rules_mentioning(&names.bridge).is_empty());
    assert!(!Path::new("/etc/netns").join(&netns).exists());
}
