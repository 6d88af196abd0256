//! What this machine charges for waking a thread, the cost every proxy hop
//! pays per message and that no proxy's code can remove.
//!
//! Two threads pass one byte back and forth over a Unix socket pair (the
//! method of `perf bench sched pipe`): each round trip is two wake-ups. Run
//! once with the threads on different CPUs and once with both on one CPU,
//! it gives the floor under the fixed-rate figures: a request through two
//! sidecars makes four more wake-ups than `direct`, so a p50 target relative
//! to `direct` and a CPU-per-request target are only reachable where four
//! wake-ups cost less than the target's margin. The run prints it beside the
//! machine's other facts so that every results file carries its own floor.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sched::CpuSet;
use nix::sys::resource::{getrusage, UsageWho};
use nix::unistd::Pid;

/// The cost of a wake-up round trip between two threads placed one way.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PingPong {
    /// Round trips made (each is two wake-ups).
    pub round_trips: u32,
    /// Wall time per round trip (µs): total time ÷ round trips.
    pub round_trip_us: f64,
    /// CPU time (user + system) both threads used per wake-up (µs).
    pub cpu_per_wakeup_us: f64,
}

/// Both placements, on the first two CPUs this process may use. A placement
/// is `None` where it cannot be made (one CPU only, or affinity refused).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WakeupCost {
    /// The threads on two different CPUs.
    pub across_cpus: Option<PingPong>,
    /// Both threads on one CPU.
    pub one_cpu: Option<PingPong>,
}

impl WakeupCost {
    /// One line for the report's machine facts, e.g. `across CPUs 41.5 µs per
    /// round trip (17.0 µs CPU per wake-up), on one CPU 8.5 µs per round trip
    /// (4.2 µs CPU per wake-up)`.
    pub fn describe(&self) -> String {
        let one = |p: Option<PingPong>| match p {
            Some(p) => format!("{:.1} µs per round trip ({:.1} µs CPU per wake-up)", p.round_trip_us, p.cpu_per_wakeup_us),
            None => "not measured".to_string(),
        };
        format!("across CPUs {}, on one CPU {}", one(self.across_cpus), one(self.one_cpu))
    }
}

/// Measures both placements with at most `round_trips` round trips each,
/// and at most `limit` of wall time each (a placement that runs out of time
/// reports the round trips it made). Never fails: a placement that cannot
/// be set up is `None`.
pub fn measure(round_trips: u32, limit: Duration) -> WakeupCost {
    let cpus = allowed_cpus();
    WakeupCost {
        across_cpus: match cpus[..] {
            [a, b, ..] => ping_pong([a, b], round_trips, limit),
            _ => None,
        },
        one_cpu: cpus.first().and_then(|&a| ping_pong([a, a], round_trips, limit)),
    }
}

/// The CPUs this process may run on, lowest first (a cpuset may leave out CPU 0).
fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to `cpu`; false when the kernel refuses.
fn pin(cpu: usize) -> bool {
    let mut set = CpuSet::new();
    set.set(cpu).is_ok() && nix::sched::sched_setaffinity(Pid::from_raw(0), &set).is_ok()
}

/// This thread's CPU time so far (µs), user + system.
fn thread_cpu_us() -> Option<f64> {
    let u = getrusage(UsageWho::RUSAGE_THREAD).ok()?;
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e6 + t.tv_usec() as f64;
    Some(us(u.user_time()) + us(u.system_time()))
}

/// The echoing side: reads a byte and sends it back until the peer closes.
/// Returns its CPU time (µs), or `None` when it could not be pinned.
fn echo(mut s: UnixStream, cpu: usize) -> Option<f64> {
    if !pin(cpu) {
        return None;
    }
    let start = thread_cpu_us()?;
    let mut b = [0u8; 1];
    while let Ok(1) = s.read(&mut b) {
        if s.write_all(&b).is_err() {
            break;
        }
    }
    Some(thread_cpu_us()? - start)
}

fn ping_pong(cpus: [usize; 2], round_trips: u32, limit: Duration) -> Option<PingPong> {
    let (mut a, b) = UnixStream::pair().ok()?;
    // A peer that never answers must not hang the run.
    a.set_read_timeout(Some(limit)).ok()?;
    let echo = std::thread::spawn(move || echo(b, cpus[1]));
    // The pinging side, on its own thread so that pinning it leaves the caller's
    // affinity alone; `a` is dropped when it returns, which ends the echo.
    let ping = std::thread::spawn(move || {
        if !pin(cpus[0]) {
            return None;
        }
        let cpu0 = thread_cpu_us()?;
        let start = Instant::now();
        let mut done = 0u32;
        let mut byte = [7u8; 1];
        while done < round_trips && start.elapsed() < limit {
            if a.write_all(&byte).is_err() || !matches!(a.read(&mut byte), Ok(1)) {
                return None;
            }
            done += 1;
        }
        Some((done, start.elapsed(), thread_cpu_us()? - cpu0))
    });
    let result = ping.join().ok().flatten();
    let echo_cpu = echo.join().ok().flatten()?;
    let (done, wall, cpu) = result?;
    if done == 0 {
        return None;
    }
    Some(PingPong {
        round_trips: done,
        round_trip_us: wall.as_secs_f64() * 1e6 / f64::from(done),
        cpu_per_wakeup_us: (cpu + echo_cpu) / (2.0 * f64::from(done)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_trip_is_counted_and_costs_time() {
        let cost = measure(500, Duration::from_secs(5));
        let one = cost.one_cpu.expect("the test may pin to a CPU it is allowed");
        assert_eq!(one.round_trips, 500);
        assert!(one.round_trip_us > 0.0 && one.round_trip_us.is_finite());
        assert!(one.cpu_per_wakeup_us >= 0.0 && one.cpu_per_wakeup_us.is_finite());
        if allowed_cpus().len() >= 2 {
            let across = cost.across_cpus.expect("two CPUs");
            assert_eq!(across.round_trips, 500);
            assert!(across.round_trip_us > 0.0);
        }
        assert!(cost.describe().contains("per round trip"));
    }

    #[test]
    fn the_time_limit_ends_a_long_measurement() {
        let started = Instant::now();
        let cpu = allowed_cpus()[0];
        let p = ping_pong([cpu, cpu], u32::MAX, Duration::from_millis(50)).expect("an allowed CPU");
        assert!(p.round_trips < u32::MAX);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_cpu_that_does_not_exist_is_not_measured() {
        let cpu = allowed_cpus()[0];
        assert_eq!(ping_pong([cpu, 4095], 10, Duration::from_millis(200)), None);
        assert_eq!(ping_pong([4095, cpu], 10, Duration::from_millis(200)), None);
    }
}
