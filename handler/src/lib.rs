//! `virtshim-handler`: the per-node daemon between the controller and the VMs of this node.
//!
//! It serves each local VMI's serial console and VNC display as WebSocket streams (subprotocol
//! `plain.kubevirt.io`, raw bytes, as KubeVirt's virt-handler does), and pauses or resumes a VM
//! through containerd's task API so that containerd, the kubelet and `crictl` see the same state.
//! Only the controller may connect: TLS with a client certificate from the controller's CA,
//! issued for the controller's name.
//!
//! - [`vms`]: finding a VMI's sockets on this node, by namespace, name and UID.
//! - [`tls`]: the mutual-TLS server configuration.
//! - [`bridge`]: one WebSocket ↔ one unix socket, byte for byte.
//! - [`tasks`]: pause and resume through containerd.
//! - [`server`]: routes, the console's one-session rule, errors as HTTP codes.

pub mod bridge;
pub mod server;
pub mod tasks;
pub mod tls;
pub mod vms;
