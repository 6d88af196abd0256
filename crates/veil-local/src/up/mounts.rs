//! The `mounts` of `veil.local.yaml`: a directory that one pod's processes
//! see at an absolute path, as a Kubernetes Secret volume mounted into the
//! pod (seed 004's egress gateway reads its client certificate from
//! `/etc/nginx-client-certs`).
//!
//! `ip netns exec` runs every process in a mount namespace of its own. There,
//! before the program starts, each mount path's parent directory gets a
//! read-only overlay of two layers: on top, a copy of the source directory
//! under the mount path's name (and, for `/etc`, a copy of the pod's
//! `/etc/netns/<netns>` files, its hosts file, which `ip netns exec` had
//! bound there); below, the parent itself. Nothing changes on the host's
//! file system, and the overlay goes away with the process. The copy is
//! owned by the process's uid, mode 0400, like a Secret volume with
//! `defaultMode: 0400`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::UpError;
use crate::process::ProcessSpec;
use crate::runtime_file::Mount;

/// Where `ip netns exec` takes a namespace's `/etc` files from.
const ETC_NETNS: &str = "/etc/netns";

/// Copies the regular files of `source` into `dest` (created), owned by
/// `uid`/`gid` with `mode`. Subdirectories are not copied.
fn copy_dir(source: &Path, dest: &Path, (uid, gid): (u32, u32), mode: u32) -> Result<(), UpError> {
    std::fs::create_dir_all(dest).map_err(|e| UpError::Io(dest.to_path_buf(), e))?;
    let entries = std::fs::read_dir(source).map_err(|e| UpError::Io(source.to_path_buf(), e))?;
    for entry in entries.flatten() {
        let from = entry.path();
        if !from.is_file() {
            continue;
        }
        let to = dest.join(entry.file_name());
        std::fs::copy(&from, &to).map_err(|e| UpError::Io(to.clone(), e))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).map_err(|e| UpError::Io(to.clone(), e))?;
        nix::unistd::chown(&to, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| UpError::Io(to.clone(), std::io::Error::from(e)))?;
    }
    let _ = std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755));
    Ok(())
}

/// A path that can go into an overlay option and a single-quoted shell word.
fn plain(path: &Path) -> Result<String, UpError> {
    let text = path.display().to_string();
    if text.contains([':', ',', '\'', '\n']) {
        let reason = "a mount path or state directory must not contain ':', ',', quotes or newlines";
        return Err(UpError::Plan(format!("{text}: {reason}")));
    }
    Ok(text)
}

/// `spec`, changed so that its program runs with `mounts` in place: `sh`
/// mounts one overlay per parent directory, then `exec`s the program (as
/// `spec.uid` through `setpriv`). `stage` is a directory of the pod's state
/// where the copies go. With no mounts, `spec` is returned unchanged.
///
/// # Errors
/// [`UpError::Io`] when a source cannot be copied; [`UpError::Plan`] for a
/// path that cannot be passed to `mount`.
pub fn wrap(spec: ProcessSpec, netns: &str, mounts: &[&Mount], stage: &Path) -> Result<ProcessSpec, UpError> {
    if mounts.is_empty() {
        return Ok(spec);
    }
    let uid = spec.uid.unwrap_or(0);
    let gid = spec.gid.or(spec.uid).unwrap_or(0);
    let mut by_parent: BTreeMap<PathBuf, Vec<&Mount>> = BTreeMap::new();
    for m in mounts {
        if let Some(parent) = m.mount_path.parent() {
            by_parent.entry(parent.to_path_buf()).or_default().push(m);
        }
    }
    let mut script = String::from("set -e\n");
    for (i, (parent, group)) in by_parent.iter().enumerate() {
        if stage.starts_with(parent) {
            let reason = format!("the state directory {} is inside {}, which a mount overlays; use a state directory elsewhere", stage.display(), parent.display());
            return Err(UpError::Plan(reason));
        }
        let layer = stage.join(format!("layer-{i}"));
        let _ = std::fs::remove_dir_all(&layer);
        for m in group {
            let Some(name) = m.mount_path.file_name() else { continue };
            copy_dir(&m.source, &layer.join(name), (uid, gid), 0o400)?;
        }
        let etc = Path::new(ETC_NETNS).join(netns);
        if parent == Path::new("/etc") && etc.is_dir() {
            copy_dir(&etc, &layer, (0, 0), 0o644)?;
        }
        script.push_str(&format!("mount -t overlay veil-mount -o ro,lowerdir={}:{} '{}'\n", plain(&layer)?, plain(parent)?, plain(parent)?));
    }
    script.push_str("exec \"$@\"\n");
    let mut args = vec!["-c".to_string(), script, "veil-mount".to_string()];
    if let Some(uid) = spec.uid {
        let gid = spec.gid.unwrap_or(uid);
        args.extend(["setpriv", "--reuid", &uid.to_string(), "--regid", &gid.to_string(), "--clear-groups", "--"].map(String::from));
    }
    args.push(spec.program.display().to_string());
    args.extend(spec.args.iter().cloned());
    Ok(ProcessSpec { program: PathBuf::from("sh"), args, uid: None, gid: None, ..spec })
}
