//! What limited a cluster run, said on its line (issue 14: "each run states what limited it").
//!
//! The readings are the machine's CPU busy share over the run (every node of the project's
//! cluster shares this machine's cores, so the machine's share is the nodes' and the control
//! plane's) and, for the controller, where its time went: kubectl's apply, the controller after
//! it, or its client's rate limiter.

/// A busy share at or above this is a saturated CPU: the run waited for cores.
const SATURATED: f64 = 0.9;

/// The machine's CPU busy share from [`CpuWindow::start`] to [`CpuWindow::share`].
pub struct CpuWindow {
    busy: u64,
    total: u64,
}

impl CpuWindow {
    pub fn start() -> Result<Self, String> {
        let (busy, total) = machine_cpu()?;
        Ok(Self { busy, total })
    }

    /// The busy share (0–1) since the start.
    pub fn share(&self) -> Result<f64, String> {
        let (busy, total) = machine_cpu()?;
        let total = total.saturating_sub(self.total);
        if total == 0 {
            return Err("no CPU time passed between two /proc/stat readings".to_owned());
        }
        Ok(busy.saturating_sub(self.busy) as f64 / total as f64)
    }
}

/// The machine's busy and total CPU time so far, in ticks, from /proc/stat's `cpu` line.
pub fn machine_cpu() -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no cpu line in /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if v.len() < 5 {
        return Err(format!("a short cpu line in /proc/stat: {line}"));
    }
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    Ok((total - v[3] - v[4], total))
}

/// What bounded guests booting on the cluster (density, creation → Running).
pub fn boot_limit(busy: f64) -> String {
    if busy >= SATURATED {
        format!("the CPU ({:.0}% busy)", busy * 100.0)
    } else {
        format!(
            "not the CPU ({:.0}% busy): the control plane's and the nodes' own latency",
            busy * 100.0
        )
    }
}

/// What bounded one phase of the controller's run: `applying` seconds of kubectl's apply,
/// `after` seconds from its last object to the end, `throttled` seconds the controller's
/// client waited for its rate limiter (QPS), the machine `busy` share.
pub fn controller_limit(applying: f64, after: f64, throttled: f64, busy: f64) -> String {
    let cpu = if busy >= SATURATED {
        format!(", on a saturated CPU ({:.0}% busy)", busy * 100.0)
    } else {
        format!(" ({:.0}% CPU busy)", busy * 100.0)
    };
    let total = applying + after;
    if throttled >= 0.1 * total {
        format!("the controller's QPS ({throttled:.1} s waited for its rate limiter){cpu}")
    } else if applying >= after {
        format!(
            "the apiserver admitting kubectl's objects one at a time through the webhooks ({applying:.1} of {total:.1} s){cpu}"
        )
    } else {
        format!("the controller ({after:.1} of {total:.1} s after kubectl's last object){cpu}")
    }
}

#[cfg(test)]
mod tests {
    use super::{boot_limit, controller_limit, CpuWindow};

    #[test]
    fn a_saturated_cpu_is_named() {
        assert_eq!(boot_limit(0.97), "the CPU (97% busy)");
        assert!(boot_limit(0.4).starts_with("not the CPU (40% busy)"));
    }

    #[test]
    fn the_controllers_bound_is_where_its_time_went() {
        let apply = controller_limit(52.7, 1.4, 0.0, 0.95);
        assert!(apply.starts_with("the apiserver admitting"), "{apply}");
        assert!(apply.contains("52.7 of 54.1 s"), "{apply}");
        assert!(apply.ends_with("on a saturated CPU (95% busy)"), "{apply}");
        let qps = controller_limit(5.0, 35.0, 20.0, 0.5);
        assert!(qps.starts_with("the controller's QPS (20.0 s"), "{qps}");
        let own = controller_limit(2.0, 8.0, 0.0, 0.5);
        assert!(own.starts_with("the controller (8.0 of 10.0 s"), "{own}");
    }

    #[test]
    fn the_cpu_share_reads() {
        let window = CpuWindow::start().expect("/proc/stat");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let share = window.share().expect("a share");
        assert!((0.0..=1.0).contains(&share), "{share}");
    }
}
