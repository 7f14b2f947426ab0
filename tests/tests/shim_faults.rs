//! Faults a node sees: containerd restarted while VMs run (every VM keeps running, keeps
//! answering at its pod IP, and still stops cleanly through the CRI), and the shim killed with
//! SIGKILL (containerd's cleanup, `shim delete`, leaves no QEMU and no state).

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::{peer, vm};

fn kernel_vmi(name: &str) -> String {
    vm::kernel_boot_vmi(
        &format!("name: {name}"),
        "160Mi",
        "",
        "console=ttyS0",
        "  terminationGracePeriodSeconds: 30\n",
    )
}

/// GET /healthz from the guest's HTTP server at the pod IP (the tests' bridge reaches it).
fn healthz(ip: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&format!("{ip}:80").parse().unwrap(), Duration::from_secs(3))
            .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

fn answers(ip: &str) -> bool {
    (0..20).any(|_| {
        let ok = healthz(ip).is_ok_and(|a| a.contains("\nok"));
        if !ok {
            std::thread::sleep(Duration::from_millis(500));
        }
        ok
    })
}

#[test]
fn five_vms_survive_two_containerd_restarts_and_stop_cleanly() {
    let test = "five_vms_survive_two_containerd_restarts_and_stop_cleanly";
    let Some(mut containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let mut vms = Vec::new();
    for i in 0..5 {
        let plan = local::plan(
            parse_documents(&kernel_vmi(&format!("steady-{i}")))
                .remove(0)
                .unwrap(),
        )
        .unwrap();
        vms.push(
            local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail())),
        );
    }
    let mut ips = Vec::new();
    let mut pids = Vec::new();
    for started in &vms {
        let ip = peer::pod_ip(&cri, &started.sandbox_id);
        vm::wait_for_console(
            &started.console_log(),
            &format!("VIRTSHIM-GUEST-UP ip={ip}"),
            Duration::from_secs(120),
        )
        .unwrap();
        assert!(answers(&ip), "{ip} does not answer before any restart");
        pids.push(vm::qemu_pids(&started.sandbox_id));
        ips.push(ip);
    }
    drop(cri);
    for round in 1..=2 {
        containerd
            .restart()
            .unwrap_or_else(|e| panic!("restart {round}: {e}"));
        let cri = containerd.cri().unwrap();
        for ((started, ip), pid) in vms.iter().zip(&ips).zip(&pids) {
            let status = cri
                .container_status(started.compute_id(), false)
                .unwrap()
                .status
                .unwrap();
            assert_eq!(
                status.state,
                virtctl::cri::api::ContainerState::ContainerRunning as i32,
                "after restart {round}"
            );
            assert_eq!(
                &vm::qemu_pids(&started.sandbox_id),
                pid,
                "QEMU was replaced after restart {round}"
            );
            assert!(
                answers(ip),
                "{ip} stopped answering after containerd restart {round}"
            );
        }
        println!("{test}: restart {round}: all 5 VMs running and answering");
    }
    let cri = containerd.cri().unwrap();
    for started in &vms {
        cri.stop_container(started.compute_id(), Duration::from_secs(30))
            .unwrap();
        let exit = vm::wait_exited(&cri, started.compute_id(), Duration::from_secs(30));
        assert_eq!(exit, Some(0), "a clean power-off after the restarts");
        vm::remove_pod(&cri, &started.sandbox_id);
    }
    containerd.stop().unwrap();
}

#[test]
fn a_shim_killed_with_sigkill_leaves_no_qemu() {
    let test = "a_shim_killed_with_sigkill_leaves_no_qemu";
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let plan = local::plan(parse_documents(&kernel_vmi("orphan")).remove(0).unwrap()).unwrap();
    let started = local::run(&cri, &plan).unwrap();
    vm::wait_for_console(
        &started.console_log(),
        vm::READY_MARKER,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(vm::qemu_pids(&started.sandbox_id).len(), 1);
    for shim in containerd.shim_pids() {
        std::process::Command::new("kill")
            .args(["-KILL", &shim.to_string()])
            .status()
            .unwrap();
    }
    // containerd notices the dead shim and runs `containerd-shim-virtshim-v2 delete`.
    let exit = vm::wait_exited(&cri, started.compute_id(), Duration::from_secs(30));
    assert!(
        exit.is_some_and(|c| c != 0),
        "the CRI reports the container ended: {exit:?}"
    );
    let _ = cri.stop_pod_sandbox(&started.sandbox_id);
    cri.remove_pod_sandbox(&started.sandbox_id).unwrap();
    vm::assert_nothing_left(&started.sandbox_id);
    containerd.stop().unwrap();
}
