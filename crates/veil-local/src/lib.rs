//! `veil-local`: the local runtime behind `veil up`. Each pod becomes a network namespace
//! on one Linux bridge, with its workload process (and, when injected, a Veil sidecar plus
//! Istio-style iptables interception) inside. Everything created on the host is journaled
//! in the state directory first, so [`teardown`] can undo it even after a crash.
//!
//! Inputs are plain structs (names, addresses, commands), not Istio resources; the CLI and
//! control plane translate. Needs root, iproute2, iptables and util-linux (`setpriv`).
#![forbid(unsafe_code)]

mod cmd;
mod error;
pub mod forward;
pub mod intercept;
pub mod ipam;
pub mod journal;
pub mod net;
pub mod process;
pub mod runtime_file;
pub mod status;
pub mod teardown;
pub mod up;

pub use error::LocalError;
pub use forward::{forward, PortForward};
pub use intercept::{
    install_cluster_ip_rules, install_sidecar_interception, ClusterIpRule, InterceptionSettings,
};
pub use ipam::{AddressPlan, EdgeAddrs, Ipv4Cidr};
pub use journal::{Entry, Journal};
pub use net::{Bridge, EdgeLink, Host};
pub use process::{spawn, stop, wait_tcp_ready, LocalProcess, ProcessSpec};
pub use runtime_file::{load, LocalRuntime, Ready, RuntimeWorkload};
pub use status::{list_live, LiveItem};
pub use teardown::{sweep, teardown, teardown_with_grace, TeardownReport};
