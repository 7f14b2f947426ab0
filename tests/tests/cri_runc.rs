//! The CRI plumbing against a real containerd with plain runc, before any virtshim code is
//! involved: a private containerd starts and answers the CRI, takes an imported image, runs a
//! pod (runtime handler "" = runc) with a container whose output shows up in the CRI log, gives
//! the pod an address on the tests' bridge, and after stop and remove leaves no container, no
//! shim, no network namespace and no mount behind. When a virtshim test fails, this one tells
//! whether the harness or the shim is at fault.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use virtctl::cri::api::{self, ContainerState, PodSandboxState};
use virtctl::cri::image_spec;
use virtctl::cri::log::{LogFollower, Stream};
use virtshim_tests::containerd::{self, Options, PrivateContainerd};
use virtshim_tests::oci;

const TEST: &str = "runc_pod_runs_logs_gets_an_address_and_leaves_nothing_behind";
const BUSYBOX: &str = "localhost/virtshim/busybox:1";
const GREETING: &str = "hello from a runc pod";
/// The whole test, containerd start to teardown.
const BUDGET: Duration = Duration::from_secs(60);

/// Prints how long each step took, so CI's log shows where time goes.
struct Clock {
    start: Instant,
    last: Instant,
}

impl Clock {
    fn new() -> Self {
        let now = Instant::now();
        Clock {
            start: now,
            last: now,
        }
    }

    fn lap(&mut self, step: &str) {
        let now = Instant::now();
        eprintln!(
            "{TEST}: {step}: {:.2}s (total {:.2}s)",
            (now - self.last).as_secs_f64(),
            (now - self.start).as_secs_f64()
        );
        self.last = now;
    }
}

fn in_test_subnet(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    // 10.77.0.0/24 without the network, gateway (bridge) and broadcast addresses.
    (a, b, c) == (10, 77, 0) && d > 1 && d < 255
}

#[test]
fn runc_pod_runs_logs_gets_an_address_and_leaves_nothing_behind() {
    let mut clock = Clock::new();
    let Some(ctrd) = PrivateContainerd::start_or_skip(TEST, Options::default()) else {
        return;
    };
    clock.lap(&format!(
        "containerd started (snapshotter {}) with the pause image",
        ctrd.snapshotter()
    ));
    let cri = ctrd.cri().expect("CRI client");

    let version = cri.version().expect("Version");
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");
    // The CRI took the settings this sandbox and virtshim need.
    let status = cri.status(true).expect("Status");
    let config: serde_json::Value =
        serde_json::from_str(status.info.get("config").expect("config in Status info"))
            .expect("config JSON");
    assert_eq!(config["restrictOOMScoreAdj"], true);
    assert_eq!(config["sandboxImage"], containerd::PAUSE_IMAGE);
    let virtshim = &config["containerd"]["runtimes"][containerd::VIRTSHIM_HANDLER];
    assert_eq!(virtshim["runtimeType"], "io.containerd.virtshim.v2");
    assert_eq!(
        virtshim["PodAnnotations"],
        serde_json::json!(["virtshim.io/*"])
    );

    let busybox = oci::busybox_image(BUSYBOX, &["/bin/busybox"])
        .expect("busybox image")
        .cmd(&["sh"]);
    ctrd.import_image(&busybox).expect("import busybox");
    let image = cri
        .image_status(BUSYBOX)
        .expect("ImageStatus")
        .expect("the CRI has the imported image");
    assert!(image.repo_tags.iter().any(|t| t == BUSYBOX), "{image:?}");
    let images = cri.list_images().expect("ListImages");
    for name in [BUSYBOX, containerd::PAUSE_IMAGE] {
        assert!(
            images.iter().any(|i| i.repo_tags.iter().any(|t| t == name)),
            "{name} not in {images:?}"
        );
    }
    assert!(cri
        .image_status("localhost/virtshim/absent:1")
        .expect("ImageStatus")
        .is_none());
    clock.lap("busybox imported");

    let uid = format!("cri-runc-{}", std::process::id());
    let log_dir = ctrd.pod_log_dir(&uid);
    let sandbox_config = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "runc-pod".into(),
            uid: uid.clone(),
            namespace: "virtshim-tests".into(),
            attempt: 0,
        }),
        hostname: "runc-pod".into(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        labels: [("test".to_string(), "cri-runc".to_string())].into(),
        linux: Some(api::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = cri
        .run_pod_sandbox(sandbox_config.clone(), "")
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", ctrd.log_tail()));
    clock.lap("pod sandbox running");

    let status = cri
        .pod_sandbox_status(&pod, true)
        .expect("PodSandboxStatus");
    let sandbox = status.status.clone().unwrap();
    assert_eq!(sandbox.state(), PodSandboxState::SandboxReady);
    let ip: Ipv4Addr = sandbox
        .network
        .as_ref()
        .map(|n| n.ip.as_str())
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("pod address {:?}: {e}", sandbox.network));
    assert!(
        in_test_subnet(ip),
        "pod address {ip} not in {}",
        containerd::SUBNET
    );
    assert!(
        containerd::bridge_exists(),
        "bridge {} missing",
        containerd::BRIDGE
    );
    let netns = containerd::netns_path(&status.info).expect("netns path in the sandbox info");
    assert!(netns.exists(), "{} missing", netns.display());
    assert!(
        netns.starts_with(ctrd.dir()),
        "{} outside the private folder",
        netns.display()
    );
    let listed = cri.list_pod_sandbox(None).expect("ListPodSandbox");
    assert_eq!(listed.iter().map(|p| &p.id).collect::<Vec<_>>(), [&pod]);

    let container_config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(image_spec(BUSYBOX)),
        command: vec!["/bin/busybox".into(), "sh".into(), "-c".into()],
        args: vec![format!("echo '{GREETING}'; exec /bin/busybox sleep 300")],
        log_path: "app/0.log".into(),
        linux: Some(api::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let container = cri
        .create_container(&pod, container_config, sandbox_config)
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", ctrd.log_tail()));
    cri.start_container(&container)
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", ctrd.log_tail()));
    clock.lap("container started");

    let status = cri
        .container_status(&container, true)
        .expect("ContainerStatus");
    let state = status.status.as_ref().unwrap();
    assert_eq!(state.state(), ContainerState::ContainerRunning, "{state:?}");
    let log_path = log_dir.join("app/0.log");
    assert_eq!(state.log_path, log_path.to_string_lossy());
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("info JSON");
    assert!(info["pid"].as_i64().unwrap_or(0) > 0, "no pid in {info}");
    let in_pod = cri
        .list_containers(Some(api::ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        }))
        .expect("ListContainers");
    assert_eq!(
        in_pod.iter().map(|c| &c.id).collect::<Vec<_>>(),
        [&container]
    );
    assert!(!ctrd.shim_pids().is_empty(), "no shim for the pod");

    let mut follower = LogFollower::new(&log_path);
    let deadline = Instant::now() + Duration::from_secs(10);
    let greeting = loop {
        let lines = follower
            .next_lines_blocking(deadline.saturating_duration_since(Instant::now()))
            .expect("read the container log");
        if let Some(line) = lines.into_iter().find(|l| l.text == GREETING) {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "{GREETING:?} not in {}: {:?}",
            log_path.display(),
            std::fs::read_to_string(&log_path)
        );
    };
    assert_eq!(greeting.stream, Stream::Stdout);
    clock.lap("greeting read from the CRI log");

    cri.stop_container(&container, Duration::from_secs(1))
        .expect("StopContainer");
    let status = cri
        .container_status(&container, false)
        .expect("ContainerStatus");
    assert_eq!(
        status.status.unwrap().state(),
        ContainerState::ContainerExited
    );
    cri.remove_container(&container).expect("RemoveContainer");
    let gone = cri
        .container_status(&container, false)
        .expect_err("container removed");
    assert!(gone.is_not_found(), "{gone}");
    clock.lap("container stopped and removed");

    cri.stop_pod_sandbox(&pod).expect("StopPodSandbox");
    let status = cri
        .pod_sandbox_status(&pod, false)
        .expect("PodSandboxStatus");
    assert_eq!(
        status.status.unwrap().state(),
        PodSandboxState::SandboxNotready
    );
    cri.remove_pod_sandbox(&pod).expect("RemovePodSandbox");
    assert!(cri
        .list_pod_sandbox(None)
        .expect("ListPodSandbox")
        .is_empty());
    assert!(cri
        .list_containers(None)
        .expect("ListContainers")
        .is_empty());
    assert!(!netns.exists(), "{} left behind", netns.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctrd.shim_pids().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ctrd.shim_pids(), Vec::<i32>::new(), "shims left running");
    clock.lap("pod stopped and removed, shim gone");

    drop(cri);
    let dir = ctrd.dir().to_path_buf();
    // A clean stop means nothing had to be forced: no mount, shim or runc container left.
    ctrd.stop().expect("clean teardown");
    assert!(!dir.exists(), "{} left behind", dir.display());
    clock.lap("containerd stopped");
    assert!(
        clock.start.elapsed() < BUDGET,
        "took {:?}, budget {BUDGET:?}",
        clock.start.elapsed()
    );
}

/// A pod with only its sandbox (the pause image) in `ctrd`; gives its id and address.
fn run_sandbox(ctrd: &PrivateContainerd, name: &str) -> (String, Ipv4Addr) {
    let cri = ctrd.cri().expect("CRI client");
    let config = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-{}", std::process::id()),
            namespace: "virtshim-tests".into(),
            attempt: 0,
        }),
        log_directory: ctrd.pod_log_dir(name).to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = cri
        .run_pod_sandbox(config, "")
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", ctrd.log_tail()));
    let status = cri
        .pod_sandbox_status(&pod, false)
        .expect("PodSandboxStatus");
    let ip = status
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    (
        pod,
        ip.parse()
            .unwrap_or_else(|e| panic!("{name} address {ip:?}: {e}")),
    )
}

/// Tests run in parallel, each with its own containerd: two instances at once share the
/// bridge and the address pool without clashing, and one stopping leaves the other working.
#[test]
fn two_private_containerds_share_the_bridge_side_by_side() {
    const TEST: &str = "two_private_containerds_share_the_bridge_side_by_side";
    let started = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| PrivateContainerd::start_or_skip(TEST, Options::default()));
        let b = s.spawn(|| PrivateContainerd::start_or_skip(TEST, Options::default()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (Some(a), Some(b)) = (a, b) else {
        return;
    };
    assert_ne!(a.socket(), b.socket());
    let (_, ip_a) = run_sandbox(&a, "side-a");
    let (pod_b, ip_b) = run_sandbox(&b, "side-b");
    assert!(
        in_test_subnet(ip_a) && in_test_subnet(ip_b),
        "{ip_a} {ip_b}"
    );
    assert_ne!(ip_a, ip_b, "both pods got the same address");

    // `a` stops with its pod still running: teardown removes it through the CRI.
    a.stop().expect("clean teardown of a");
    assert!(
        containerd::bridge_exists(),
        "bridge deleted while b uses it"
    );
    let cri = b.cri().expect("CRI client");
    let status = cri
        .pod_sandbox_status(&pod_b, false)
        .expect("PodSandboxStatus");
    assert_eq!(
        status.status.unwrap().state(),
        PodSandboxState::SandboxReady
    );
    drop(cri);
    b.stop().expect("clean teardown of b");
    eprintln!("{TEST}: {:.2}s", started.elapsed().as_secs_f64());
    assert!(started.elapsed() < BUDGET);
}
