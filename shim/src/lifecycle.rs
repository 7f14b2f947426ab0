//! The shim binary's lifecycle, separate from the Task service: `start` (one shim per pod,
//! grouped by sandbox id), `delete` (cleanup after a shim died), and serving.

use crate::bundle::{Membership, Role};
use crate::host::node::NodeHost;
use crate::paths::Roots;
use crate::pod::Pod;
use crate::service::{Events, Service};
use crate::state::{PodState, PodStateFile};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};
use std::path::Path;
use std::sync::Arc;

/// The shim process.
#[allow(missing_debug_implementations)] // containerd-shim's ExitSignal has no Debug
pub struct VirtShim {
    exit: Arc<ExitSignal>,
    id: String,
    namespace: String,
}

fn shim_error(message: String) -> containerd_shim::Error {
    containerd_shim::Error::Other(message)
}

impl containerd_shim::Shim for VirtShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            exit: Arc::new(ExitSignal::default()),
            id: args.id.clone(),
            namespace: args.namespace.clone(),
        }
    }

    /// One shim serves a whole pod, as Kata's does: containers of a sandbox reuse the socket
    /// the sandbox's shim listens on.
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let bundle = Membership::read(Path::new(".")).map_err(|e| shim_error(e.to_string()))?;
        let grouping = bundle.role.sandbox_id(&opts.id).to_owned();
        let (_, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    /// Runs in a fresh process when the serving shim is gone: stop what it left running.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let roots = Roots::from_env();
        if let Ok(bundle) = Membership::read(Path::new(".")) {
            let sandbox = bundle.role.sandbox_id(&self.id).to_owned();
            let paths = roots.pod(&sandbox);
            if let Some(state) = PodState::read(&paths.state_file()) {
                state.kill_qemu();
            }
            crate::rootfs::unmount(&Path::new(".").join("rootfs"));
            if bundle.role == Role::Sandbox || !paths.state_file().exists() {
                crate::vm::exposed::remove_dir(&paths.disks());
            }
            if bundle.role == Role::Sandbox {
                crate::state::kill_qemus_under(&paths.embed_root());
                crate::vm::exposed::remove_dir(&paths.disks());
                crate::qemu_ids::release(&paths.run);
                let _ = std::fs::remove_dir_all(&paths.run);
                let _ = std::fs::remove_dir_all(&paths.lib);
            }
        }
        let mut response = DeleteResponse::new();
        response.exit_status = 137;
        response.exited_at = Some(containerd_shim::util::timestamp()?).into();
        Ok(response)
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        // The whole shim lives in the pod's network namespace: every thread it starts from
        // here on (libvirt's among them, and the QEMU they fork) inherits it. A shim that cannot
        // enter it must not work in the node's: the failure is kept, and the pod's Create
        // returns it.
        let netns_failure = match Membership::read(Path::new(".")) {
            Ok(bundle) if bundle.role == Role::Sandbox => match &bundle.netns {
                Some(netns) => enter_netns(netns).err().map(|e| {
                    tracing::error!(netns = %netns.display(), error = %e, "cannot enter the pod's network namespace");
                    format!("cannot enter the pod's network namespace {}: {e}", netns.display())
                }),
                // Judged at Create: a sandbox without its own namespace is refused there.
                None => None,
            },
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the sandbox bundle");
                Some(format!("cannot read the sandbox bundle: {e}"))
            }
        };
        let events = Events::new(publisher, self.namespace.clone());
        let roots = Roots::from_env();
        let pod = Arc::new(Pod::new(
            roots.clone(),
            NodeHost::new(roots),
            Arc::new(events.clone()),
            netns_failure,
        ));
        Service::new(pod, events, self.exit.clone())
    }
}

fn enter_netns(path: &Path) -> std::io::Result<()> {
    crate::network::remember_node_namespace().map_err(std::io::Error::other)?;
    let file = std::fs::File::open(path)?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}
