//! Reaping QEMU. The shim is a subreaper, so the QEMU processes libvirt daemonizes (the VM's,
//! and the short-lived ones it starts to probe QEMU's capabilities) become its children when
//! their intermediate parent exits. They must be reaped, or libvirt, which waits for a probe
//! QEMU to disappear, waits for ever. But a catch-all `waitpid(-1)` would also steal the
//! children libvirt waits for itself — among them QEMU's own `-daemonize` parent, which is a
//! QEMU too. So this thread reaps only zombie children that are QEMU, found through
//! `/proc/self/task/*/children`, and of those only the VM's own (whose pid the shim waits for)
//! at once, any other only once it has stayed a zombie for a second: libvirt is blocked in
//! `waitpid` on its direct children before they exit, so a zombie nobody took within a second
//! is an orphan. Exit statuses are kept for whoever asks.
//!
//! The thread sleeps until a child changes state (SIGCHLD, through signal-hook's self-pipe) or
//! someone starts waiting for a pid, not on a timer: a node runs one shim per VM, and a reaper
//! polling `/proc` twenty times a second cost each idle VM 10m of CPU (`make bench
//! ONLY=cluster-density`).

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the reaper looks when SIGCHLD cannot wake it (its pipe could not be registered).
const POLL: Duration = Duration::from_millis(50);
/// How often it looks anyway while nothing wakes it: a guard, not the mechanism.
const IDLE_LOOK: Duration = Duration::from_secs(10);
/// Statuses nobody claimed (probe QEMUs) are kept only this many at a time.
const KEEP: usize = 64;

#[derive(Debug, Default)]
struct Reaper {
    exited: Mutex<HashMap<u32, WaitStatus>>,
    changed: Condvar,
    /// Pids someone waits for: reaped as soon as they are zombies.
    wanted: Mutex<std::collections::HashSet<u32>>,
    /// The write end of the pipe the reaper sleeps on (SIGCHLD writes to it as well).
    wake: OnceLock<UnixStream>,
}

/// How long an unclaimed QEMU zombie is left for its parent before the shim reaps it.
const ORPHAN_AGE: Duration = Duration::from_secs(1);

static REAPER: OnceLock<&'static Reaper> = OnceLock::new();

fn reaper() -> &'static Reaper {
    REAPER.get_or_init(|| {
        let reaper: &'static Reaper = Box::leak(Box::default());
        let wakeup = wakeup_pipe(reaper);
        let spawned = std::thread::Builder::new()
            .name("qemu-reaper".into())
            .spawn(move || {
                let mut zombies_seen = HashMap::new();
                let mut wakeup = wakeup;
                loop {
                    reap_qemu_zombies(reaper, &mut zombies_seen);
                    // A zombie left for its parent is looked at again when its time is up.
                    let orphan_due = zombies_seen
                        .values()
                        .map(|seen: &Instant| {
                            (*seen + ORPHAN_AGE).saturating_duration_since(Instant::now())
                        })
                        .min();
                    match wakeup.as_mut() {
                        Some(pipe) => sleep_on(pipe, orphan_due.map_or(IDLE_LOOK, |d| d.max(POLL))),
                        None => std::thread::sleep(POLL),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the QEMU reaper");
        }
        reaper
    })
}

/// The read end of a pipe that SIGCHLD and [`wait`] write to; `None` (the reaper then polls)
/// when it cannot be made.
fn wakeup_pipe(reaper: &Reaper) -> Option<UnixStream> {
    let made = (|| -> std::io::Result<UnixStream> {
        let (read, write) = UnixStream::pair()?;
        // A full pipe already says "look": the signal handler's write must never block.
        write.set_nonblocking(true)?;
        let for_waiters = write.try_clone()?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, write)?;
        let _ = reaper.wake.set(for_waiters);
        Ok(read)
    })();
    match made {
        Ok(read) => Some(read),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGCHLD wakeup for the QEMU reaper: it polls instead");
            None
        }
    }
}

/// Sleeps until something is written to the pipe or `timeout` passes, then drains it.
fn sleep_on(pipe: &mut UnixStream, timeout: Duration) {
    let mut buf = [0u8; 64];
    if pipe.set_read_timeout(Some(timeout)).is_err() {
        std::thread::sleep(POLL);
        return;
    }
    match pipe.read(&mut buf) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
            ) => {}
        // Not expected from a socket pair that lives as long as the process; never spin.
        Err(_) => std::thread::sleep(POLL),
    }
}

/// Starts the reaper (idempotent); call before libvirt may start QEMU.
pub fn start() {
    reaper();
}

fn children() -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// A zombie whose command is QEMU (`comm` is cut to 15 characters: "qemu-system-x86").
fn is_qemu_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // pid (comm) state …; comm may hold spaces or parentheses, so split at the last ')'.
    let Some((head, tail)) = stat.rsplit_once(')') else {
        return false;
    };
    let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
    comm.starts_with("qemu-system") && tail.trim_start().starts_with('Z')
}

fn reap_qemu_zombies(reaper: &Reaper, zombies_seen: &mut HashMap<u32, Instant>) {
    let now = Instant::now();
    let zombies: Vec<u32> = children()
        .into_iter()
        .filter(|pid| is_qemu_zombie(*pid))
        .collect();
    zombies_seen.retain(|pid, _| zombies.contains(pid));
    for pid in zombies {
        let first_seen = *zombies_seen.entry(pid).or_insert(now);
        let wanted = reaper
            .wanted
            .lock()
            .map(|w| w.contains(&pid))
            .unwrap_or(false);
        if !wanted && now.duration_since(first_seen) < ORPHAN_AGE {
            continue;
        }
        if let Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) =
            waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG))
        {
            let mut exited = match reaper.exited.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if exited.len() >= KEEP {
                exited.clear();
            }
            exited.insert(pid, status);
            reaper.changed.notify_all();
        }
    }
}

/// Waits until QEMU `pid` has exited; its wait status when the shim reaped it, `None` when it
/// was not the shim's child (it is then polled until it is gone).
pub fn wait(pid: u32) -> Option<WaitStatus> {
    let reaper = reaper();
    if let Ok(mut wanted) = reaper.wanted.lock() {
        wanted.insert(pid);
    }
    // It may be a zombie already, left for its parent: the reaper looks again now.
    if let Some(mut wake) = reaper.wake.get() {
        let _ = wake.write(&[1]);
    }
    let status = wait_reaped(reaper, pid);
    if let Ok(mut wanted) = reaper.wanted.lock() {
        wanted.remove(&pid);
    }
    status
}

fn wait_reaped(reaper: &Reaper, pid: u32) -> Option<WaitStatus> {
    let mut exited = match reaper.exited.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    loop {
        if let Some(status) = exited.remove(&pid) {
            return Some(status);
        }
        let alive = nix::sys::signal::kill(Pid::from_raw(pid as i32), None).is_ok();
        if !alive {
            // Gone without passing through the reaper: another process reaped it.
            return exited.remove(&pid);
        }
        exited = match reaper
            .changed
            .wait_timeout(exited, Duration::from_millis(200))
        {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
}
