//! `virtctl console` driven as a user drives it: a child process typing into the guest's
//! shell and reading what comes back.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `virtctl console` as a child, its output on a channel.
#[derive(Debug)]
pub struct Console {
    child: Child,
    output: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Console {
    /// `virtctl console VM` in `ns` through the cluster `kubeconfig` names.
    pub fn open(kubeconfig: &Path, ns: &str, vm: &str) -> Self {
        let mut child = Command::new(crate::vm::virtctl_binary())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-n", ns, "console", vm, "--timeout", "60"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run virtctl console");
        let (tx, output) = mpsc::channel();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        for mut out in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            child,
            output,
            seen: Vec::new(),
        }
    }

    /// All it printed so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Types `echo WORD-$((6*7))` every few seconds until `WORD-42` comes back.
    pub fn echo(&mut self, word: &str) -> Result<(), String> {
        let wanted = format!("{word}-42");
        let start = Instant::now();
        let mut typed = Instant::now() - Duration::from_secs(10);
        while start.elapsed() < Duration::from_secs(120) {
            if typed.elapsed() > Duration::from_secs(3) {
                if let Some(stdin) = self.child.stdin.as_mut() {
                    let _ = stdin.write_all(format!("echo {word}-$((6*7))\n").as_bytes());
                    let _ = stdin.flush();
                }
                typed = Instant::now();
            }
            if let Ok(chunk) = self.output.recv_timeout(Duration::from_millis(200)) {
                self.seen.extend_from_slice(&chunk);
                if self.text().contains(&wanted) {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no {wanted} on the console; it showed: {}",
            self.text()
        ))
    }

    /// Waits for virtctl to exit by itself; its status and what it printed.
    pub fn exit(&mut self, timeout: Duration) -> Option<(std::process::ExitStatus, String)> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            while let Ok(chunk) = self.output.try_recv() {
                self.seen.extend_from_slice(&chunk);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                while let Ok(chunk) = self.output.try_recv() {
                    self.seen.extend_from_slice(&chunk);
                }
                return Some((status, self.text()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
