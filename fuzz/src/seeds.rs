//! Seed inputs for the `vmi_annotation` fuzz target, made from manifests rather than committed:
//! for each VMI a manifest stands for (a VMI, or a VM's or replica set's template), the VMI as a
//! user could write it into the annotation, and the annotation the controller puts on its pod
//! (`pod_for_vmi`); then the hostile annotations of `tests/tests/shim_hostile.rs`, each with
//! what the shim must make of it.
//!
//! Compiled into `api/examples/fuzz_seeds.rs` (which writes them for `make fuzz`) and
//! `api/tests/fuzz_regressions.rs` (which checks them under `cargo test`).

use serde_json::{json, Value};
use std::collections::BTreeSet;
use virtshim_api::manifest::{parse_documents, Object};
use virtshim_api::pod::{pod_for_vmi, VMI_ANNOTATION};
use virtshim_api::types::VirtualMachineInstance;

/// One seed and what the shim must make of it.
#[derive(Debug, Clone)]
pub struct Seed {
    /// A file name for the corpus.
    pub name: String,
    pub text: String,
    pub expect: Expect,
}

/// What the shim must make of a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything but a panic.
    Any,
    Accepted,
    /// Refused with a message containing this.
    Refused(&'static str),
}

/// The VMI a manifest object stands for: itself, or its template under its name.
fn vmi_of(object: Object) -> Option<VirtualMachineInstance> {
    let (meta, template) = match object {
        Object::VirtualMachineInstance(vmi) => return Some(vmi),
        Object::VirtualMachine(vm) => (vm.metadata, vm.spec.template),
        Object::VirtualMachineInstanceReplicaSet(rs) => (rs.metadata, rs.spec.template),
    };
    let template = template?;
    let name = meta.name.or(meta.generate_name)?;
    let mut vmi = VirtualMachineInstance::new(&name, template.spec.unwrap_or_default());
    vmi.metadata.namespace = meta.namespace;
    vmi.metadata.labels = template.metadata.and_then(|m| m.labels);
    Some(vmi)
}

/// The `virtshim.io/vmi` annotation of the pod the controller makes for `vmi`, if it admits it.
pub fn controller_annotation(vmi: &VirtualMachineInstance) -> Option<String> {
    let mut vmi = vmi.clone();
    vmi.metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned());
    vmi.metadata.uid = Some("6d1f5e2a-0000-4000-8000-000000000001".to_owned());
    virtshim_api::defaults::vmi(&mut vmi);
    let config = virtshim_api::validate::vmi(&vmi).ok()?;
    let pod = pod_for_vmi(&vmi, &config, &BTreeSet::new()).ok()?;
    pod.metadata.annotations?.remove(VMI_ANNOTATION)
}

/// Seeds from one manifest file (`name` is its file name).
pub fn from_manifest(name: &str, yaml: &str) -> Vec<Seed> {
    let stem = name.trim_end_matches(".yaml").trim_end_matches(".yml");
    let mut seeds = Vec::new();
    for (i, object) in parse_documents(yaml).into_iter().enumerate() {
        let Some(vmi) = object.ok().and_then(vmi_of) else {
            continue;
        };
        let written = Object::VirtualMachineInstance(vmi.clone()).to_value();
        seeds.push(Seed {
            name: format!("{stem}-{i}.written.json"),
            text: written.to_string(),
            expect: Expect::Any,
        });
        if let Some(text) = controller_annotation(&vmi) {
            seeds.push(Seed {
                name: format!("{stem}-{i}.pod.json"),
                text,
                expect: Expect::Accepted,
            });
        }
    }
    seeds
}

/// The VMI `tests/tests/shim_hostile.rs` edits into hostile annotations.
const VICTIM: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: victim}
spec:
  domain:
    memory: {guest: 128Mi}
    devices:
      disks:
      - {name: root, disk: {bus: virtio}}
  volumes:
  - {name: root, containerDisk: {image: 'localhost/virtshim/guest-container-disk:v1'}}
";

/// The hostile annotations of `tests/tests/shim_hostile.rs`: those refused when the annotation
/// is read (the rest, refused later on the image's files, pass this stage).
pub fn hostile() -> Vec<Seed> {
    let victim = parse_documents(VICTIM)
        .into_iter()
        .next()
        .and_then(Result::ok)
        .and_then(vmi_of)
        .and_then(|vmi| controller_annotation(&vmi))
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .unwrap_or(Value::Null);
    let edited = |edit: &dyn Fn(&mut Value)| {
        let mut value = victim.clone();
        edit(&mut value);
        value.to_string()
    };
    let cases: Vec<(&str, String, Expect)> = vec![
        ("victim", victim.to_string(), Expect::Accepted),
        (
            "invalid-json",
            "{\"apiVersion\": \"kubevirt.io/v1\", ".to_owned(),
            Expect::Refused("not valid JSON"),
        ),
        (
            "not-a-vmi",
            json!({"apiVersion": "v1", "kind": "Pod"}).to_string(),
            Expect::Refused("v1 Pod is not a KubeVirt"),
        ),
        (
            "xml-in-name",
            edited(&|v| v["metadata"]["name"] = json!("x'/><devices><disk type='file'>")),
            Expect::Refused("metadata.name must be a DNS subdomain and metadata.namespace a DNS label"),
        ),
        (
            "xml-in-serial",
            edited(&|v| v["spec"]["domain"]["devices"]["disks"][0]["serial"] = json!("</serial><x>")),
            Expect::Refused("spec.domain.devices.disks[0].serial: invalid value"),
        ),
        (
            "dotdot-path",
            edited(&|v| v["spec"]["volumes"][0]["containerDisk"]["path"] = json!("/disk/../../../etc/shadow")),
            Expect::Refused("spec.volumes[0].containerDisk.path: invalid value \"/disk/../../../etc/shadow\": must be a normalized path"),
        ),
        (
            "host-path",
            edited(&|v| v["spec"]["volumes"][0]["containerDisk"]["path"] = json!("/etc/shadow")),
            Expect::Accepted,
        ),
        (
            "absurd-memory",
            edited(&|v| v["spec"]["domain"]["memory"]["guest"] = json!("64Ti")),
            Expect::Refused("spec.domain.memory.guest: invalid value \"64Ti\": must be between 1M"),
        ),
        (
            "missing-memory",
            edited(&|v| v["spec"]["domain"]["memory"] = json!({})),
            Expect::Refused("spec.domain.memory.guest: required value"),
        ),
        (
            "wrong-type",
            edited(&|v| v["spec"]["domain"]["cpu"] = json!({"cores": "many"})),
            Expect::Refused("spec.domain.cpu.cores: invalid type"),
        ),
        (
            "other-namespace",
            edited(&|v| v["metadata"]["namespace"] = json!("kube-system")),
            Expect::Refused("names namespace \"kube-system\", but the pod is in \"default\""),
        ),
        (
            "long-name",
            edited(&|v| {
                v["metadata"]["name"] = json!(format!("{}.{}", "a".repeat(60), "b".repeat(60)))
            }),
            Expect::Accepted,
        ),
        (
            "namespace-not-a-label",
            edited(&|v| v["metadata"]["namespace"] = json!("a.b")),
            Expect::Refused("but the pod is in"),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, text, expect)| Seed {
            name: format!("hostile-{name}.json"),
            text,
            expect,
        })
        .collect()
}

/// The dictionary words of a set of seeds: every object key and every string value of at most
/// 32 bytes, quoted as JSON text (`"domain"`), each once.
pub fn words(seeds: &[Seed]) -> BTreeSet<String> {
    fn walk(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    out.insert(Value::from(key.as_str()).to_string());
                    walk(value, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::String(s) if s.len() <= 32 => {
                out.insert(value.to_string());
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for seed in seeds {
        if let Ok(value) = serde_json::from_str::<Value>(&seed.text) {
            walk(&value, &mut out);
        }
    }
    out
}

/// A word as a line of a libFuzzer dictionary: quoted, with `\\`, `\"` and `\xNN` escapes.
pub fn dict_line(word: &str) -> String {
    let mut line = String::from("\"");
    for b in word.bytes() {
        match b {
            b'\\' => line.push_str("\\\\"),
            b'"' => line.push_str("\\\""),
            b' '..=b'~' => line.push(char::from(b)),
            _ => line.push_str(&format!("\\x{b:02X}")),
        }
    }
    line.push_str("\"\n");
    line
}

/// The container id the `oci_bundle` target reads bundles as (the sandbox's, for the sandbox).
pub const OWN_ID: &str = "c76a1477bb6fc06c12fd3b7bced593567b6983c7113976a575b51b94997fffb0";
/// The pod's uid and its sandbox in the bundle seeds.
pub const POD_UID: &str = "b2a1f0e6-8234-4da0-b263-7ae159094e84";
pub const COMPUTE_ID: &str = "9f3c0d1e2b4a59687766554433221100ffeeddccbbaa99887766554433221100";
/// The storage root the `oci_bundle` target's node allows for hostPath PersistentVolumes.
pub const STORAGE_ROOT: &str = "/srv/hpvolumes";

/// containerd's default capability set, as its specs list it.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A `config.json` in the shape containerd's CRI plugin writes for a virtshim pod: the sandbox
/// (`role` "sandbox") or one of its containers (by name), read as if by the shim of sandbox
/// [`OWN_ID`].
pub fn oci_spec(container: Option<&str>) -> Value {
    let kubelet = format!("/var/lib/kubelet/pods/{POD_UID}");
    let sandbox = format!("/run/containerd/io.containerd.grpc.v1.cri/sandboxes/{OWN_ID}");
    let mut annotations = json!({
        "io.kubernetes.cri.sandbox-id": OWN_ID,
        "io.kubernetes.cri.sandbox-name": "virt-launcher-vm1-x7k2q",
        "io.kubernetes.cri.sandbox-namespace": "default",
        "io.kubernetes.cri.sandbox-uid": POD_UID,
        "virtshim.io/vmi": "{}",
    });
    let (mounts, cgroup, args) = match container {
        None => {
            annotations["io.kubernetes.cri.container-type"] = json!("sandbox");
            annotations["io.kubernetes.cri.sandbox-log-directory"] = json!(format!(
                "/var/log/pods/default_virt-launcher-vm1-x7k2q_{POD_UID}"
            ));
            (
                json!([
                    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                    {"destination": "/dev/shm", "type": "bind", "source": format!("{sandbox}/shm"), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]},
                    {"destination": "/etc/resolv.conf", "type": "bind", "source": format!("{sandbox}/resolv.conf"), "options": ["rbind", "ro"]}
                ]),
                format!("/kubepods/burstable/pod{POD_UID}/{OWN_ID}"),
                json!(["/pause"]),
            )
        }
        Some(name) => {
            annotations["io.kubernetes.cri.container-type"] = json!("container");
            annotations["io.kubernetes.cri.container-name"] = json!(name);
            annotations["io.kubernetes.cri.image-name"] =
                json!("localhost/virtshim/guest-container-disk:v1");
            (
                json!([
                    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                    {"destination": "/etc/hosts", "type": "bind", "source": format!("{kubelet}/etc-hosts"), "options": ["rbind", "rprivate", "rw"]},
                    {"destination": "/dev/termination-log", "type": "bind", "source": format!("{kubelet}/containers/{name}/0b1c2d3e"), "options": ["rbind", "rprivate", "rw"]},
                    {"destination": "/etc/hostname", "type": "bind", "source": format!("{sandbox}/hostname"), "options": ["rbind", "rprivate", "rw"]},
                    {"destination": "/dev/shm", "type": "bind", "source": format!("{sandbox}/shm"), "options": ["rbind", "rprivate", "rw"]},
                    {"destination": "/var/run/virtshim/volumes/scratch", "type": "bind", "source": format!("{kubelet}/volumes/kubernetes.io~empty-dir/scratch"), "options": ["rbind", "rprivate", "rw"]},
                    {"destination": "/var/run/virtshim/volumes/data", "type": "bind", "source": format!("{STORAGE_ROOT}/pvc-1"), "options": ["rbind", "rprivate", "rw"]}
                ]),
                format!("/kubepods/burstable/pod{POD_UID}/{COMPUTE_ID}"),
                json!(["/virtshim-runs-no-process"]),
            )
        }
    };
    json!({
        "ociVersion": "1.1.0",
        "process": {
            "user": {"uid": 0, "gid": 0, "additionalGids": [0]},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {"bounding": DEFAULT_CAPS, "effective": DEFAULT_CAPS, "permitted": DEFAULT_CAPS},
            "noNewPrivileges": true,
            "oomScoreAdj": -997
        },
        "root": {"path": "rootfs", "readonly": container.is_none()},
        "hostname": "virt-launcher-vm1-x7k2q",
        "mounts": mounts,
        "annotations": annotations,
        "linux": {
            "resources": {
                "devices": [
                    {"allow": false, "access": "rwm"},
                    {"allow": true, "type": "b", "major": 7, "minor": 3, "access": "rwm"}
                ],
                "memory": {"limit": 402653184},
                "cpu": {"shares": 102, "quota": 100000, "period": 100000}
            },
            "cgroupsPath": cgroup,
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
                {"type": "network", "path": "/var/run/netns/cni-3e0f5a54-13c2-7b0d-8f1e-5d0c9a1b2c3d"}
            ],
            "devices": [{"path": "/dev/virtshim/data", "type": "b", "major": 7, "minor": 3, "fileMode": 432, "uid": 0, "gid": 0}],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}
        }
    })
}

/// Seeds for the `oci_bundle` target: the sandbox's and containers' bundles as containerd
/// writes them for a virtshim pod, and each way a pod's author can make one that a VM pod must
/// not be (the refusals of `tests/tests/shim_hostile.rs`, here without containerd).
pub fn oci_bundles() -> Vec<Seed> {
    let edited = |container: Option<&str>, edit: &dyn Fn(&mut Value)| {
        let mut spec = oci_spec(container);
        edit(&mut spec);
        spec.to_string()
    };
    let compute = Some("compute");
    let without = |kind: &'static str| {
        move |v: &mut Value| {
            if let Some(list) = v["linux"]["namespaces"].as_array_mut() {
                list.retain(|n| n["type"] != kind);
            }
        }
    };
    let mount_from =
        |source: &'static str| move |v: &mut Value| v["mounts"][5]["source"] = json!(source);
    let cases: Vec<(&str, String, Expect)> = vec![
        ("sandbox", oci_spec(None).to_string(), Expect::Accepted),
        ("compute", oci_spec(compute).to_string(), Expect::Accepted),
        (
            "carrier",
            oci_spec(Some("volumedata")).to_string(),
            Expect::Accepted,
        ),
        (
            "host-network",
            edited(compute, &without("network")),
            Expect::Refused("spec.hostNetwork"),
        ),
        (
            "host-pid",
            edited(None, &without("pid")),
            Expect::Refused("spec.hostPID"),
        ),
        (
            "host-ipc",
            edited(compute, &without("ipc")),
            Expect::Refused("spec.hostIPC"),
        ),
        (
            "new-network",
            edited(None, &|v| {
                v["linux"]["namespaces"][4] = json!({"type": "network"})
            }),
            Expect::Refused("no network namespace of its own"),
        ),
        (
            "privileged",
            edited(compute, &|v| {
                v["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}])
            }),
            Expect::Refused("securityContext.privileged"),
        ),
        (
            "sys-admin",
            edited(compute, &|v| {
                v["process"]["capabilities"]["effective"] = json!(["CAP_SYS_ADMIN"])
            }),
            Expect::Refused("securityContext.capabilities.add: CAP_SYS_ADMIN"),
        ),
        (
            "host-path",
            edited(compute, &mount_from("/etc")),
            Expect::Refused("is not a volume the kubelet made"),
        ),
        (
            "host-path-dotdot",
            edited(compute, &|v| {
                v["mounts"][5]["source"] =
                    json!(format!("/var/lib/kubelet/pods/{POD_UID}/../../../../etc"))
            }),
            Expect::Refused("is not a volume the kubelet made"),
        ),
        (
            "another-pod",
            edited(
                compute,
                &mount_from("/var/lib/kubelet/pods/0c7ad7d5-0000-4000-8000-000000000000/volumes/x"),
            ),
            Expect::Refused("is not a volume the kubelet made"),
        ),
        (
            "no-identity",
            edited(compute, &|v| {
                v["annotations"]["io.kubernetes.cri.sandbox-uid"] = json!("")
            }),
            Expect::Refused("io.kubernetes.cri.sandbox-uid is missing"),
        ),
        (
            "not-cri",
            edited(compute, &|v| v["annotations"] = json!({})),
            Expect::Refused("through the CRI only"),
        ),
        (
            "not-json",
            "{\"ociVersion\": ".to_owned(),
            Expect::Refused("EOF"),
        ),
        // A fuzzing finding, fixed: a storage root is matched component by component, and
        // `..` is a component: `/srv/hpvolumes/../../etc` starts with the root and is `/etc`.
        (
            "storage-root-dotdot",
            edited(compute, &|v| {
                v["mounts"][5]["source"] = json!(format!("{STORAGE_ROOT}/../../etc"))
            }),
            Expect::Refused("is not a volume the kubelet made"),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, text, expect)| Seed {
            name: format!("{name}.json"),
            text,
            expect,
        })
        .collect()
}
