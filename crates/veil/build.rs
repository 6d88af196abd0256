//! Link options of the `veil-sidecar` binary, for release builds on
//! Linux/glibc: an idle sidecar's resident memory is mostly the pages of its
//! binary it has touched, so
//!
//! - `veil-sidecar.ld` (written by `bench/sidecar-layout` from a profiled
//!   run) puts the functions a sidecar runs first in its text, where they
//!   share pages instead of touching nearly every 64 KiB window of 8 MB;
//! - `-z pack-relative-relocs` stores the relative relocations as RELR
//!   (8 KiB instead of the 700 KiB table the loader reads at every start);
//!   glibc applies them from 2.36 on, so older ones keep the plain table.
//!
//! `cargo sidecar` (an alias in `.cargo/config.toml`) then relinks the binary
//! with `-C target-feature=+crt-static`, as a static PIE: glibc's code goes
//! into the binary, where the script places the members that ran, and the
//! sidecar maps no loader, libc, libm or libgcc_s pages (a build script
//! cannot set a target feature, hence the alias).
//!
//! `VEIL_SIDECAR_LAYOUT=0` turns both off (to measure their effect).
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// glibc's version on the build machine, from `getconf GNU_LIBC_VERSION`
/// ("glibc 2.36").
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.split_whitespace().nth(1)?.split_once('.')?;
    Some((major.parse().ok()?, minor.split('.').next()?.parse().ok()?))
}

fn main() {
    println!("cargo:rerun-if-changed=veil-sidecar.ld");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VEIL_SIDECAR_LAYOUT");
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let native = var("HOST") == var("TARGET");
    if !linux_gnu || var("PROFILE") != "release" || var("VEIL_SIDECAR_LAYOUT") == "0" {
        return;
    }
    let script = Path::new(&var("CARGO_MANIFEST_DIR")).join("veil-sidecar.ld");
    let path = script.display().to_string();
    if script.is_file() && !path.contains(',') {
        println!("cargo:rustc-link-arg-bin=veil-sidecar=-Wl,-T,{path}");
    }
    if native && glibc_version().is_some_and(|v| v >= (2, 36)) {
        println!("cargo:rustc-link-arg-bin=veil-sidecar=-Wl,-z,pack-relative-relocs");
    }
}
