//! `virtctl` commands that say on their first line where they listen, then serve until
//! stopped: `vnc --proxy-only` (`{"port":N}`) and `port-forward` (`Forwarding from ADDR to …`).
//! Either binary (ours or upstream's) behaves so; a test starts one, reads where, and connects.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `virtctl` and the first line it printed; stopped when dropped.
#[derive(Debug)]
pub struct Serving {
    child: Child,
    first_line: String,
}

impl Serving {
    /// Runs `bin --kubeconfig KUBECONFIG ARGS…` and waits for its first line of output.
    pub fn start(bin: &Path, kubeconfig: &Path, args: &[&str]) -> Result<Self, String> {
        let mut child = Command::new(bin)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("virtctl: no stdout".to_owned());
        };
        // Owned before reading, so that a failed read still stops the child.
        let mut serving = Self {
            child,
            first_line: String::new(),
        };
        BufReader::new(stdout)
            .read_line(&mut serving.first_line)
            .map_err(|e| format!("virtctl {}: {e}", args.join(" ")))?;
        Ok(serving)
    }

    /// The first line, as printed.
    pub fn first_line(&self) -> &str {
        &self.first_line
    }

    /// The local port `vnc --proxy-only` printed (`{"port":N}`).
    pub fn vnc_port(&self) -> Result<u16, String> {
        serde_json::from_str::<serde_json::Value>(self.first_line.trim())
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| format!("no {{\"port\":N}} line: {:?}", self.first_line))
    }

    /// The local address `port-forward` printed (`Forwarding from 127.0.0.1:PORT to …`).
    pub fn forwarded_addr(&self) -> Result<String, String> {
        self.first_line
            .split_whitespace()
            .nth(2)
            .map(str::to_owned)
            .ok_or_else(|| format!("no local address in {:?}", self.first_line))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::Serving;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A stand-in for virtctl that prints its last argument and serves (sleeps) until killed.
    fn fake(dir: &Path) -> std::path::PathBuf {
        let bin = dir.join("virtctl");
        std::fs::write(&bin, "#!/bin/sh\nshift 2\necho \"$1\"\nexec sleep 600\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    #[test]
    fn reads_where_it_listens_and_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake(dir.path());
        let vnc = Serving::start(&bin, Path::new("k"), &[r#"{"port":5901}"#]).unwrap();
        assert_eq!(vnc.vnc_port(), Ok(5901));
        assert!(vnc.forwarded_addr().is_err());
        let pid = vnc.child.id();
        drop(vnc);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the child outlived its Serving"
        );

        let line = "Forwarding from 127.0.0.1:40123 to port 80 of vm/a.b";
        let forward = Serving::start(&bin, Path::new("k"), &[line]).unwrap();
        assert_eq!(forward.forwarded_addr().as_deref(), Ok("127.0.0.1:40123"));
        assert!(forward.vnc_port().is_err());
        assert_eq!(forward.first_line().trim_end(), line);
    }
}
