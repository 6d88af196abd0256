//! A short scheduler slice for the proxy's threads.
//!
//! A proxy does a few microseconds of work per wake-up (read, encrypt, write)
//! and then sleeps. Linux's EEVDF scheduler (6.6+) gives every runnable task
//! a slice, 0.75 ms by default, and a task that wakes only runs at once when
//! its deadline (wake-up time + slice) comes before that of the task on the
//! CPU. Since Linux 6.12 a `SCHED_OTHER` task may ask for a shorter slice
//! through `sched_setattr(2)`'s `sched_runtime` (100 µs to 100 ms, no
//! privilege needed): its deadlines come sooner, so it preempts the
//! long-running task it wakes next to, instead of queueing behind it
//! (`Documentation/scheduler/sched-eevdf.rst`). Its CPU share is unchanged.
//! On older kernels the field is ignored for `SCHED_OTHER`.
//!
//! The slice is set on the calling thread and inherited by the threads it
//! creates afterwards, so the proxy sets it first thing in `main`.

use std::io;
use thiserror::Error;

/// Shortest slice the kernel accepts, in µs.
pub const MIN_SLICE_US: u64 = 100;
/// Longest slice the kernel accepts, in µs.
pub const MAX_SLICE_US: u64 = 100_000;

/// Why the slice could not be set.
#[derive(Debug, Error)]
pub enum SliceError {
    /// The requested slice is outside what the kernel accepts.
    #[error("scheduler slice {0} µs is outside {MIN_SLICE_US}..={MAX_SLICE_US} µs; set VEIL_SCHED_SLICE_US in that range, or 0 to keep the kernel's")]
    OutOfRange(u64),
    /// `sched_setattr` failed (e.g. a seccomp profile forbids it).
    #[error("sched_setattr failed ({0}); the proxy keeps the kernel's default slice (set VEIL_SCHED_SLICE_US=0 to skip this call)")]
    Syscall(io::Error),
}

/// `struct sched_attr` of `sched_setattr(2)` (`SCHED_ATTR_SIZE_VER1`, 56 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    /// For `SCHED_OTHER` since Linux 6.12: the requested slice, in ns.
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Asks for a slice of `slice_us` µs for the calling thread when its policy
/// is `SCHED_OTHER` (its nice value is kept; other policies are left
/// alone); threads it creates later inherit it.
///
/// Errors: [`SliceError::OutOfRange`] outside 100..=100 000 µs (nothing is
/// called); [`SliceError::Syscall`] when the kernel refuses.
pub fn set_latency_slice(slice_us: u64) -> Result<(), SliceError> {
    if !(MIN_SLICE_US..=MAX_SLICE_US).contains(&slice_us) {
        return Err(SliceError::OutOfRange(slice_us));
    }
    let size = std::mem::size_of::<SchedAttr>() as u32;
    let mut attr = SchedAttr::default();
    // SAFETY: `sched_getattr(pid = 0, attr, size, flags = 0)` writes at most
    // `size` bytes to the pointer, which points at a live `#[repr(C)]`
    // struct of exactly that size laid out as the kernel's `struct
    // sched_attr` (every bit pattern is valid for its integer fields); the
    // kernel does not keep the pointer. pid 0 is the calling thread.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, size, 0) };
    if rc != 0 {
        return Err(SliceError::Syscall(io::Error::last_os_error()));
    }
    if attr.sched_policy != libc::SCHED_OTHER as u32 {
        // A real-time or batch policy chosen by the operator stays as it is.
        return Ok(());
    }
    // The nice value read above is written back unchanged.
    attr.size = size;
    attr.sched_flags = 0;
    attr.sched_runtime = slice_us * 1000;
    // SAFETY: `sched_setattr(pid = 0, attr, flags = 0)` reads `attr.size`
    // bytes from the pointer, which points at the live, initialised struct
    // above; the kernel does not keep the pointer.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SliceError::Syscall(io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice the kernel reports for the calling thread, in ns, from
    /// `/proc/thread-self/sched` (absent on kernels without EEVDF).
    fn reported_slice_ns() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = text.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    fn out_of_range_is_refused_before_the_call() {
        assert!(matches!(set_latency_slice(0), Err(SliceError::OutOfRange(0))));
        assert!(matches!(set_latency_slice(99), Err(SliceError::OutOfRange(99))));
        assert!(matches!(set_latency_slice(100_001), Err(SliceError::OutOfRange(_))));
        let message = set_latency_slice(5).unwrap_err().to_string();
        assert!(message.contains("VEIL_SCHED_SLICE_US"), "{message}");
    }

    #[test]
    fn the_thread_gets_the_slice_and_its_children_inherit_it() {
        // A thread of its own, so the test runner's threads keep theirs.
        let (own, child) = std::thread::spawn(|| {
            let before = reported_slice_ns();
            match set_latency_slice(150) {
                Ok(()) => {}
                // A seccomp profile that forbids sched_setattr (some container
                // runtimes): the proxy logs and carries on, nothing to compare here.
                Err(SliceError::Syscall(e)) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) => {
                    eprintln!("sched_setattr refused here ({e}); skipping the comparison");
                    return Ok((None, None));
                }
                Err(e) => return Err(e.to_string()),
            }
            let own = reported_slice_ns();
            let child = std::thread::spawn(reported_slice_ns).join().map_err(|_| "child panicked".to_string())?;
            if before.is_some() {
                assert_ne!(before, Some(150_000), "the control: the default slice differs from the one set");
            }
            Ok::<_, String>((own, child))
        })
        .join()
        .expect("test thread")
        .expect("sched_setattr");
        // Kernels without EEVDF custom slices report no `se.slice`: nothing to compare.
        if own.is_some() {
            assert_eq!(own, Some(150_000));
            assert_eq!(child, Some(150_000), "threads created later inherit the slice");
        }
    }
}
