//! `virtctl local run|console|ls|logs|stop|rm`: a VM on this node through containerd's CRI, no cluster.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use virtctl::cri::blocking::BlockingCri;
use virtctl::cri::log::LogFollower;
use virtctl::local;
use virtshim_api::manifest::parse_documents;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// containerd's CRI socket.
    #[arg(long, global = true, default_value = virtctl::cri::DEFAULT_SOCKET)]
    socket: String,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, clap::Subcommand)]
enum Verb {
    /// Run the VirtualMachine or VirtualMachineInstance in FILE.
    Run {
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Stay on the serial console until the VM stops. On a terminal it is interactive, as
        /// `virtctl local console` (Ctrl+] leaves, the VM keeps running); otherwise, or with
        /// --until, the console log is printed (Ctrl+C leaves it running).
        #[arg(long)]
        attach: bool,
        /// With --attach: return once the console shows this text.
        #[arg(long, requires = "attach")]
        until: Option<String>,
        /// With --until: give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// A Secret the VM uses (cloud-init secretRef) as a folder of one file per key. Repeatable.
        #[arg(long = "secret", value_name = "NAME=DIR")]
        secrets: Vec<String>,
        /// A PersistentVolumeClaim the VM uses: a folder holding disk.img (filesystem mode) or a
        /// block device such as /dev/loop0 (block mode). Repeatable. A folder without disk.img
        /// gets one made, sparse, as on a blank claim: SIZE (a Kubernetes quantity such as 2Gi)
        /// is the claim's capacity; without it, 10Gi, or the folder's free space when less.
        #[arg(long = "pvc", value_name = "CLAIM=DIR[:SIZE]|DEVICE")]
        claims: Vec<String>,
    },
    /// Type into a VM's serial console: what it prints shows here, every key goes to the guest
    /// (the terminal is raw); Ctrl+] leaves and the VM keeps running. Works with a pipe too.
    Console { name: String },
    /// List the VMs virtctl local started.
    Ls,
    /// Print a VM's serial console log.
    Logs {
        name: String,
        /// Keep printing as the console prints.
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop a VM: ACPI power button, then forced after the grace period.
    Stop {
        name: String,
        /// Seconds the guest gets to power off [default: the VMI's
        /// terminationGracePeriodSeconds, else 30].
        #[arg(long)]
        grace_period: Option<u64>,
    },
    /// Remove a VM's pod, stopping a running VM first as `stop` does (ACPI power button, forced
    /// after the grace period).
    Rm {
        name: String,
        /// Seconds the guest gets to power off [default: the VMI's
        /// terminationGracePeriodSeconds, else 30].
        #[arg(long, conflicts_with = "force")]
        grace_period: Option<u64>,
        /// Kill a running VM at once instead of asking the guest to power off.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let cri = BlockingCri::connect(&args.socket)
        .with_context(|| format!("connecting to containerd at {}", args.socket))?;
    match &args.verb {
        Verb::Run {
            file,
            attach,
            until,
            timeout,
            secrets,
            claims,
        } => {
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
            };
            let mut documents = parse_documents(&text);
            if documents.len() != 1 {
                bail!("{file}: expected one VirtualMachine or VirtualMachineInstance, found {} documents", documents.len());
            }
            let object = documents.remove(0).with_context(|| file.clone())?;
            let mut plan = local::plan(object)?;
            let mut claim_sizes = std::collections::HashMap::new();
            let mut claim_paths = std::collections::HashMap::new();
            for item in claims {
                let claim = parse_claim(item)?;
                let path =
                    std::fs::canonicalize(&claim.path).with_context(|| format!("--pvc {item}"))?;
                match claim.size {
                    Some(bytes) => {
                        claim_sizes.insert(claim.name.clone(), bytes);
                    }
                    None if path.is_dir() => {
                        if let Some(bytes) = local::default_claim_size(&path)? {
                            eprintln!(
                                "PersistentVolumeClaim {}: {} has no {}; the new one gets {} (give another size with --pvc {}={}:SIZE)",
                                claim.name,
                                path.display(),
                                virtshim_api::pod::PVC_DISK_FILE,
                                virtshim_api::quantity::format_bytes(bytes),
                                claim.name,
                                claim.path,
                            );
                            claim_sizes.insert(claim.name.clone(), bytes);
                        }
                    }
                    None => {}
                }
                claim_paths.insert(claim.name, path);
            }
            plan.set_host_volumes(local::HostVolumes {
                secrets: name_dirs(secrets, "--secret")?,
                claims: claim_paths,
                claim_sizes,
            })?;
            let name = plan.vmi.metadata.name.clone().unwrap_or_default();
            if local::find(&cri, &name).is_ok() {
                bail!("a local VM named {name:?} exists already: virtctl local rm {name}");
            }
            let started = local::run(&cri, &plan)?;
            eprintln!(
                "virtualmachineinstance/{name} started: pod {} sandbox {}",
                plan.pod_name,
                &started.sandbox_id[..12.min(started.sandbox_id.len())]
            );
            let interactive = rustix::termios::isatty(std::io::stdin().as_fd());
            if *attach && interactive && until.is_none() {
                return console(&cri, &name);
            }
            if *attach {
                return follow(
                    &cri,
                    &name,
                    &started.console_log(),
                    until.as_deref(),
                    Duration::from_secs(*timeout),
                );
            }
        }
        Verb::Console { name } => return console(&cri, name),
        Verb::Ls => {
            println!(
                "{:<24} {:<10} {:<14} {:<20} EXIT",
                "NAME", "NAMESPACE", "POD", "STATE"
            );
            for vm in local::list(&cri)? {
                println!(
                    "{:<24} {:<10} {:<14} {:<20} {}",
                    vm.name,
                    vm.namespace,
                    &vm.sandbox_id[..12.min(vm.sandbox_id.len())],
                    vm.state,
                    vm.exit_code.map(|c| c.to_string()).unwrap_or_default()
                );
            }
        }
        Verb::Logs { name, follow: keep } => {
            let vm = local::find(&cri, name)?;
            let log = std::path::Path::new(&vm.log_directory)
                .join(virtshim_api::pod::COMPUTE_CONTAINER)
                .join("0.log");
            if *keep {
                return follow(&cri, name, &log, None, Duration::MAX);
            }
            for line in virtctl::cri::log::read_log(&log)
                .with_context(|| format!("reading {}", log.display()))?
            {
                println!("{}", line.text);
            }
        }
        Verb::Stop { name, grace_period } => {
            let vm = local::find(&cri, name)?;
            let grace = grace_period.map_or(vm.grace_period, Duration::from_secs);
            local::stop(&cri, &vm, grace)?;
            let vm = local::find(&cri, name)?;
            println!(
                "virtualmachineinstance/{name} stopped (exit code {})",
                vm.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into())
            );
        }
        Verb::Rm {
            name,
            grace_period,
            force,
        } => {
            let vm = local::find(&cri, name)?;
            if vm.is_running() && !*force {
                let grace = grace_period.map_or(vm.grace_period, Duration::from_secs);
                eprintln!(
                    "virtualmachineinstance/{name}: powering off (up to {}s; --force kills it at once)",
                    grace.as_secs()
                );
                local::stop(&cri, &vm, grace)?;
            }
            local::remove(&cri, &vm)?;
            println!("virtualmachineinstance/{name} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads `NAME=DIR` flags into a map, checking that each folder exists.
fn name_dirs(
    flags: &[String],
    flag: &str,
) -> Result<std::collections::HashMap<String, std::path::PathBuf>> {
    let mut out = std::collections::HashMap::new();
    for item in flags {
        let Some((name, dir)) = item.split_once('=') else {
            bail!("{flag} {item}: expected NAME=DIR")
        };
        let dir = std::fs::canonicalize(dir).with_context(|| format!("{flag} {item}"))?;
        if !dir.is_dir() {
            bail!("{flag} {item}: {} is not a folder", dir.display());
        }
        out.insert(name.to_owned(), dir);
    }
    Ok(out)
}

/// An interactive serial console through the CRI's Attach, as `kubectl attach -it` reaches
/// it: chosen over the pod's console socket because it needs only the CRI socket virtctl talks
/// to anyway, wherever the shim keeps its state. Keys go to the guest until Ctrl+] or the end
/// of standard input; the VM keeps running either way.
fn console(cri: &BlockingCri, name: &str) -> Result<ExitCode> {
    let vm = local::find(cri, name)?;
    let Some(compute) = vm.compute_id.as_deref().filter(|_| vm.is_running()) else {
        bail!(
            "virtualmachineinstance/{name} is not running ({}): virtctl local logs {name} shows its console log",
            vm.state
        );
    };
    let url = cri
        .attach(compute, true)
        .with_context(|| format!("attaching to virtualmachineinstance/{name}"))?;
    let broken = super::block_on(async {
        let socket = virtctl::cri::attach::open(&url).await?;
        let terminal = super::console::RawTerminal::enable()?;
        eprint!("Connected to the console of {name}. Type Ctrl+] to leave.\r\n");
        let result = relay(socket).await;
        drop(terminal);
        eprintln!();
        result
    })?;
    if let Some(why) = broken {
        // The guest powering off ends the stream too; that is no failure of the console.
        match local::find(cri, name) {
            Ok(vm) if !vm.is_running() => {
                eprintln!(
                    "virtualmachineinstance/{name} stopped (exit code {})",
                    vm.exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "?".into())
                );
            }
            _ => {
                eprintln!("Disconnected from the console of {name} ({why})");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Moves keys to the attach stream and its output to standard output until Ctrl+], the end of
/// input, or the stream's end; why the stream broke, if it did.
async fn relay(
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Result<Option<String>> {
    use super::console::Input;
    use futures::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::Message;
    use virtctl::cri::attach::{parse, stdin_message, Output};
    let (mut tx, mut rx) = socket.split();
    let mut keys = super::console::keyboard();
    let mut stdout = tokio::io::stdout();
    loop {
        tokio::select! {
            key = keys.recv() => match key {
                Some(Input::Bytes(bytes)) => {
                    if let Err(e) = tx.send(Message::Binary(stdin_message(&bytes).into())).await {
                        return Ok(Some(e.to_string()));
                    }
                }
                Some(Input::Escape) | None => {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ok(None);
                }
            },
            message = rx.next() => match message {
                Some(Ok(Message::Binary(data))) => match parse(&data) {
                    Output::Data(bytes) => {
                        stdout.write_all(bytes).await?;
                        stdout.flush().await?;
                    }
                    Output::Status(status) if !status.is_empty() => {
                        return Ok(Some(stream_status(status)));
                    }
                    Output::Status(_) | Output::Other => {}
                },
                Some(Ok(Message::Close(_))) | None => {
                    return Ok(Some("the stream ended".into()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Ok(Some(e.to_string())),
            },
        }
    }
}

/// Words the Kubernetes `Status` a streaming server closes with.
fn stream_status(status: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(status).unwrap_or_default();
    match (value["status"].as_str(), value["message"].as_str()) {
        (Some("Success"), _) => "the console closed".to_owned(),
        (_, Some(message)) => message.to_owned(),
        _ => String::from_utf8_lossy(status).into_owned(),
    }
}

/// One `--pvc CLAIM=PATH[:SIZE]` flag.
#[derive(Debug, PartialEq, Eq)]
struct ClaimFlag {
    name: String,
    path: String,
    /// Bytes.
    size: Option<u64>,
}

/// Reads `CLAIM=PATH[:SIZE]`. A path that exists as written is taken whole, so a folder with a
/// `:` in its name still works; otherwise what follows the last `:` must be a size.
fn parse_claim(item: &str) -> Result<ClaimFlag> {
    let Some((name, rest)) = item.split_once('=') else {
        bail!("--pvc {item}: expected CLAIM=DIR[:SIZE] or CLAIM=DEVICE")
    };
    if name.is_empty() || rest.is_empty() {
        bail!("--pvc {item}: expected CLAIM=DIR[:SIZE] or CLAIM=DEVICE");
    }
    let whole = |size| ClaimFlag {
        name: name.to_owned(),
        path: rest.to_owned(),
        size,
    };
    if std::path::Path::new(rest).exists() {
        return Ok(whole(None));
    }
    let Some((path, size)) = rest.rsplit_once(':') else {
        return Ok(whole(None));
    };
    let bytes = virtshim_api::quantity::Quantity::parse(size)
        .ok()
        .and_then(|q| q.to_units())
        .filter(|b| *b > 0)
        .with_context(|| {
            format!("--pvc {item}: {size:?} is not a size (a Kubernetes quantity such as 2Gi)")
        })?;
    Ok(ClaimFlag {
        name: name.to_owned(),
        path: path.to_owned(),
        size: Some(bytes),
    })
}

/// Prints the console as it comes; returns when `until` shows up, the VM stops, or time is up.
fn follow(
    cri: &BlockingCri,
    name: &str,
    log: &std::path::Path,
    until: Option<&str>,
    timeout: Duration,
) -> Result<ExitCode> {
    let mut follower = LogFollower::new(log);
    let started = Instant::now();
    let mut last_check = Instant::now();
    let stdout = std::io::stdout();
    loop {
        for line in follower.next_lines_blocking(Duration::from_millis(500))? {
            writeln!(stdout.lock(), "{}", line.text)?;
            if until.is_some_and(|u| line.text.contains(u)) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if last_check.elapsed() > Duration::from_secs(2) {
            last_check = Instant::now();
            let vm = local::find(cri, name)?;
            if vm.state == "CONTAINER_EXITED" {
                for line in follower.read_new()? {
                    writeln!(stdout.lock(), "{}", line.text)?;
                }
                eprintln!(
                    "virtualmachineinstance/{name} stopped (exit code {})",
                    vm.exit_code.unwrap_or(-1)
                );
                return Ok(if until.is_some() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                });
            }
        }
        if started.elapsed() > timeout {
            eprintln!(
                "timed out after {}s waiting for {:?}",
                timeout.as_secs(),
                until.unwrap_or("")
            );
            return Ok(ExitCode::FAILURE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_flags() {
        let flag = |name: &str, path: &str, size| ClaimFlag {
            name: name.into(),
            path: path.into(),
            size,
        };
        let cases = [
            (
                "data=/no/such/dir",
                Some(flag("data", "/no/such/dir", None)),
            ),
            (
                "data=/no/such/dir:2Gi",
                Some(flag("data", "/no/such/dir", Some(2 << 30))),
            ),
            (
                "data=/no/such/dir:512Mi",
                Some(flag("data", "/no/such/dir", Some(512 << 20))),
            ),
            (
                "data=/no/such/dir:1G",
                Some(flag("data", "/no/such/dir", Some(1_000_000_000))),
            ),
            ("fast=/dev/null", Some(flag("fast", "/dev/null", None))),
            ("data=/no/such/dir:lots", None),
            ("data=/no/such/dir:0", None),
            ("data=/no/such/dir:-1Gi", None),
            ("data", None),
            ("=/srv/x", None),
            ("data=", None),
        ];
        for (item, expected) in cases {
            assert_eq!(parse_claim(item).ok(), expected, "{item}");
        }
    }
}
