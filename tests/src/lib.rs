//! Shared harness for virtshim's integration tests: finding the repository, the KubeVirt
//! examples, and the cluster the environment gives (`make test` starts the project's own,
//! cluster/up.sh; without one, tests that need it skip, saying so, and under `CI=true` fail),
//! virtshim installed on it as the README says ([`cluster`]); a private containerd per test ([`containerd`]) and the OCI images
//! the tests import into it ([`oci`]).

pub mod cluster;
pub mod console;
pub mod containerd;
pub mod handler;
pub mod oci;
pub mod peer;
pub mod virtctl;
pub mod vm;

use std::path::PathBuf;
use std::process::Command;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// KubeVirt's example YAMLs (`$VIRTSHIM_EXAMPLES`, else `../shared/examples/kubevirt`).
pub fn examples_dir() -> PathBuf {
    std::env::var_os("VIRTSHIM_EXAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/examples/kubevirt"))
}

/// Whether this run is CI's (`CI` set and not empty): there a test that cannot get its real
/// parts fails rather than skips.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A cluster given by the environment: `$KUBECONFIG` naming a readable file whose apiserver
/// answers (`make test` starts the project's cluster and sets it). `None` (with the reason
/// printed) means cluster tests must skip; under CI they fail instead.
pub fn cluster(test: &str) -> Option<Kubectl> {
    let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) else {
        skip(
            test,
            "no cluster given (set KUBECONFIG; `make test` and `make cluster` start one)",
        );
        return None;
    };
    let kubectl = Kubectl {
        kubeconfig: PathBuf::from(kubeconfig),
    };
    match kubectl.run(&["get", "--raw", "/readyz"]) {
        Ok(_) => Some(kubectl),
        Err(e) => {
            // A KUBECONFIG that is set but broken is a failure, not a skip.
            panic!("KUBECONFIG is set but the cluster does not answer: {e}");
        }
    }
}

/// Says that a test skipped and why. `make test` runs with `--show-output`, so the line
/// appears in the log and a skip is never mistaken for a pass; under CI, where every real part
/// is provided, a skip is a failure with that reason.
pub fn skip(test: &str, why: &str) {
    if in_ci() {
        panic!("{test} cannot run in CI: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// Polls `probe` every half second until it returns `Some` (saying how long it took), or panics
/// after `timeout` naming `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = probe() {
            println!("{what}: after {:.1} s", start.elapsed().as_secs_f64());
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The last `n` characters of `text` (to show the end of a long log in a message).
pub fn tail(text: &str, n: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

/// Polls `probe` every half second until it returns `Ok` (saying how long it took); after
/// `timeout`, `Err` saying what was expected and what the last probe saw.
pub fn poll<T>(
    what: &str,
    timeout: std::time::Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = std::time::Instant::now();
    loop {
        match probe() {
            Ok(v) => {
                println!("{what}: after {:.1} s", start.elapsed().as_secs_f64());
                return Ok(v);
            }
            Err(seen) if start.elapsed() >= timeout => {
                return Err(format!(
                    "expected {what} within {timeout:?}; last seen: {seen}"
                ));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// kubectl against the given cluster.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// The object `kind/name` in `namespace` as JSON; `None` when the apiserver says it does
    /// not exist (kubectl's `--ignore-not-found` then prints nothing). Any other failure is
    /// retried for a few seconds and then panics: a read that failed must never pass for
    /// "gone" (a test waiting for a deletion, or asserting that something survived one, would
    /// take the wrong turn on it).
    pub fn get_json(&self, namespace: &str, kind: &str, name: &str) -> Option<serde_json::Value> {
        const ATTEMPTS: u32 = 5;
        let mut failure = String::new();
        for attempt in 1..=ATTEMPTS {
            let args = [
                "get",
                "-n",
                namespace,
                kind,
                name,
                "-o",
                "json",
                "--ignore-not-found",
            ];
            match self.run(&args) {
                Ok(out) if out.trim().is_empty() => return None,
                Ok(out) => {
                    return Some(serde_json::from_str(&out).unwrap_or_else(|e| {
                        panic!("kubectl get {kind} {namespace}/{name}: not JSON ({e}): {out}")
                    }))
                }
                Err(e) => failure = e,
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)));
            }
        }
        panic!("kubectl get {kind} {namespace}/{name} failed {ATTEMPTS} times: {failure}")
    }

    /// The kubeconfig file naming this cluster.
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// A kubectl command for this cluster, to run as a child (attach, port-forward).
    pub fn command(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.env("KUBECONFIG", &self.kubeconfig);
        command
    }

    /// Runs kubectl; `Ok(stdout)` on success, `Err(stderr)` otherwise.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        self.run_stdin(args, None)
    }

    /// Runs kubectl with `input` on its standard input.
    pub fn run_stdin(&self, args: &[&str], input: Option<&str>) -> Result<String, String> {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run kubectl: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            if let Some(input) = input {
                stdin
                    .write_all(input.as_bytes())
                    .map_err(|e| e.to_string())?;
            }
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}
