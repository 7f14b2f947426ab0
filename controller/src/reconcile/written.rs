//! The writes this controller made that its caches may not show yet.
//!
//! A pass reads the object from the controller's cache. Right after the controller wrote it
//! (a finalizer, a status), another change (its VMI's, its pod's) can trigger a pass before the
//! watch has brought that write back: the pass then works from the version the write
//! replaced, and its own writes fail their preconditions (409 on a status applied at a
//! resourceVersion, 422 on a finalizer patch's `test`). With 500 VMs started at once that was
//! 3.5 of the controller's 16 requests per VM (BENCHMARKS.md, "The controller's 500-VM
//! throughput"). KubeVirt keeps "expectations" for the same reason.
//!
//! So every write notes the resourceVersion it replaced, and a pass that finds its object
//! still at one of those versions does nothing: the watch event of the write is on its way and
//! triggers the next pass. A cached version the controller did not replace (the write came
//! back, or someone else wrote since) forgets the note. resourceVersions are only compared for
//! equality, as the API allows.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Notes older than this are dropped when the map grows: their objects were deleted (no
/// pass came to forget them), or their watch event was lost and a resync has long come.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// The size above which old notes are swept.
const SWEEP_ABOVE: usize = 4096;

/// The versions each object's writes replaced, by key (`kind/namespace/name`).
#[derive(Debug, Default)]
pub struct Written(Mutex<HashMap<String, Note>>);

#[derive(Debug)]
struct Note {
    replaced: Vec<String>,
    at: Instant,
}

impl Written {
    /// Notes that `key`, at `before`, was written and is now at `after`. A write that changed
    /// nothing (the same version back) or an object without a version notes nothing.
    pub fn wrote(&self, key: &str, before: Option<&str>, after: Option<&str>) {
        let Some(before) = before else { return };
        if after == Some(before) {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, n| n.at.elapsed() < FORGET_AFTER);
        }
        let note = map.entry(key.to_owned()).or_insert_with(|| Note {
            replaced: Vec::new(),
            at: Instant::now(),
        });
        note.at = Instant::now();
        if !note.replaced.iter().any(|v| v == before) {
            note.replaced.push(before.to_owned());
        }
    }

    /// Whether the cached copy of `key`, at `cached`, is one this controller's writes replaced:
    /// the cache is behind them. Otherwise the note is forgotten.
    pub fn behind(&self, key: &str, cached: Option<&str>) -> bool {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(note) = map.get(key) else {
            return false;
        };
        if cached.is_some_and(|c| note.replaced.iter().any(|v| v == c)) {
            return true;
        }
        map.remove(key);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Written;

    #[test]
    fn a_copy_the_write_replaced_is_behind_until_a_newer_one_comes() {
        let w = Written::default();
        assert!(!w.behind("vm/ns/a", Some("10")), "nothing written yet");
        w.wrote("vm/ns/a", Some("10"), Some("11"));
        assert!(w.behind("vm/ns/a", Some("10")));
        assert!(
            w.behind("vm/ns/a", Some("10")),
            "still behind until the cache moves"
        );
        assert!(!w.behind("vm/ns/b", Some("10")), "another object");
        assert!(!w.behind("vm/ns/a", Some("11")), "the write came back");
        assert!(
            !w.behind("vm/ns/a", Some("10")),
            "the note is gone once the cache caught up"
        );
    }

    #[test]
    fn every_version_a_pass_replaced_is_behind() {
        let w = Written::default();
        // A finalizer, then the status, in one pass.
        w.wrote("vm/ns/a", Some("10"), Some("11"));
        w.wrote("vm/ns/a", Some("11"), Some("12"));
        assert!(w.behind("vm/ns/a", Some("10")));
        assert!(w.behind("vm/ns/a", Some("11")));
        assert!(!w.behind("vm/ns/a", Some("12")));
    }

    #[test]
    fn someone_elses_version_or_no_change_is_not_behind() {
        let w = Written::default();
        w.wrote("vm/ns/a", Some("10"), Some("10"));
        assert!(
            !w.behind("vm/ns/a", Some("10")),
            "a write that changed nothing"
        );
        w.wrote("vm/ns/a", None, Some("3"));
        assert!(!w.behind("vm/ns/a", None), "no version to compare");
        w.wrote("vm/ns/a", Some("10"), Some("11"));
        assert!(
            !w.behind("vm/ns/a", Some("15")),
            "a later write by someone else"
        );
        assert!(!w.behind("vm/ns/a", None));
    }
}
