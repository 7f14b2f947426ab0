//! The ttrpc Task service containerd drives. Requests are turned into calls on the [`Pod`]
//! here, at the edge, so the rest of the shim never sees protobuf; errors become ttrpc codes in
//! one place (`impl From<Error> for ttrpc::Error`).

use crate::error::Error;
use crate::host::node::NodeHost;
use crate::pod::{ExitInfo, ExitSink, Pod, Status};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::ExitSignal;
use containerd_shim_protos::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, Empty, KillRequest, PidsRequest, PidsResponse, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageDyn;
use containerd_shim_protos::shim::shim::{
    CheckpointTaskRequest, CloseIORequest, ExecProcessRequest, PauseRequest, ResizePtyRequest,
    ResumeRequest, ShutdownRequest, UpdateTaskRequest,
};
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, TtrpcContext};
use containerd_shim_protos::types::task::ProcessInfo;
use std::sync::{Arc, Mutex};

type TtrpcResult<T> = ttrpc::Result<T>;

/// Sends task events to containerd; the CRI learns of exits from them.
#[derive(Clone)]
pub struct Events {
    publisher: Arc<Mutex<RemotePublisher>>,
    namespace: String,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        Self {
            publisher: Arc::new(Mutex::new(publisher)),
            namespace,
        }
    }

    fn send(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let Ok(publisher) = self.publisher.lock() else {
            return;
        };
        if let Err(e) = publisher.publish(
            ttrpc::context::with_timeout(0),
            topic,
            &self.namespace,
            event,
        ) {
            tracing::warn!(topic, error = %e, "cannot publish event to containerd");
        }
    }
}

/// protobuf's time, from the pod's.
fn timestamp(at: std::time::SystemTime) -> Timestamp {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut t = Timestamp::new();
    t.seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    t.nanos = i32::try_from(since.subsec_nanos()).unwrap_or(0);
    t
}

impl ExitSink for Events {
    fn exit(&self, id: &str, pid: u32, exit: &ExitInfo) {
        let event = TaskExit {
            container_id: id.to_owned(),
            id: id.to_owned(),
            pid,
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        };
        self.send(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event));
    }
}

/// The Task service of one shim (one pod).
#[derive(Clone)]
#[allow(missing_debug_implementations)] // containerd-shim's ExitSignal has no Debug
pub struct Service {
    pod: Arc<Pod<NodeHost>>,
    events: Events,
    exit: Arc<ExitSignal>,
}

impl Service {
    pub fn new(pod: Arc<Pod<NodeHost>>, events: Events, exit: Arc<ExitSignal>) -> Self {
        Self { pod, events, exit }
    }
}

fn status_code(status: Status) -> containerd_shim_protos::types::task::Status {
    use containerd_shim_protos::types::task::Status as S;
    match status {
        Status::Created => S::CREATED,
        Status::Running => S::RUNNING,
        Status::Paused => S::PAUSED,
        Status::Stopped => S::STOPPED,
    }
}

impl containerd_shim_protos::Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let mounts: Vec<crate::rootfs::RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| crate::rootfs::RootfsMount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let pid = self.pod.create(
            &req.id,
            &req.bundle,
            &mounts,
            &crate::pod::TaskIo {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                terminal: req.terminal,
            },
        )?;
        self.events.send(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle,
                pid,
                ..Default::default()
            }),
        );
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        if !req.exec_id.is_empty() {
            return Err(Error::Unsupported("exec").into());
        }
        let pid = self.pod.start(&req.id)?;
        self.events.send(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: req.id,
                pid,
                ..Default::default()
            }),
        );
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        if !req.exec_id.is_empty() {
            return Err(Error::NotFound(format!("exec {}", req.exec_id)).into());
        }
        let s = self.pod.state(&req.id)?;
        Ok(StateResponse {
            id: req.id,
            bundle: s.bundle,
            pid: s.pid,
            status: status_code(s.status).into(),
            stdout: s.stdout,
            terminal: s.terminal,
            exit_status: s.exit.as_ref().map_or(0, |e| e.code),
            exited_at: s.exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        if !req.exec_id.is_empty() {
            return Err(Error::NotFound(format!("exec {}", req.exec_id)).into());
        }
        self.pod.kill(&req.id, req.signal)?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let exit = self.pod.wait(&req.id)?;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        if !req.exec_id.is_empty() {
            return Err(Error::NotFound(format!("exec {}", req.exec_id)).into());
        }
        let (pid, exit) = self.pod.delete(&req.id)?;
        self.events.send(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id,
                pid,
                exit_status: exit.code,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            }),
        );
        Ok(DeleteResponse {
            pid,
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let pid = self.pod.state(&req.id)?.pid;
        let processes = if pid == 0 {
            vec![]
        } else {
            vec![ProcessInfo {
                pid,
                ..Default::default()
            }]
        };
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        self.pod.pause(&req.id)?;
        self.events.send(
            topics::TASK_PAUSED_EVENT_TOPIC,
            Box::new(TaskPaused {
                container_id: req.id,
                ..Default::default()
            }),
        );
        Ok(Empty::new())
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        self.pod.resume(&req.id)?;
        self.events.send(
            topics::TASK_RESUMED_EVENT_TOPIC,
            Box::new(TaskResumed {
                container_id: req.id,
                ..Default::default()
            }),
        );
        Ok(Empty::new())
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let metrics = self.pod.metrics(&req.id)?;
        let any =
            containerd_shim::util::convert_to_any(Box::new(metrics)).map_err(Error::Metrics)?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let task_pid = self.pod.state(&req.id).map(|s| s.pid).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.pod.is_empty() {
            self.exit.signal();
        }
        Ok(Empty::new())
    }

    fn exec(&self, _ctx: &TtrpcContext, _req: ExecProcessRequest) -> TtrpcResult<Empty> {
        Err(Error::Unsupported("exec").into())
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, _req: ResizePtyRequest) -> TtrpcResult<Empty> {
        Err(Error::Unsupported("resizing a terminal").into())
    }

    fn close_io(&self, _ctx: &TtrpcContext, _req: CloseIORequest) -> TtrpcResult<Empty> {
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &TtrpcContext, _req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        Err(Error::Unsupported("changing resources of a running container").into())
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, _req: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        Err(Error::Unsupported("checkpoint").into())
    }
}
