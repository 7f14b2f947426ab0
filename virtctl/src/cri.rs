//! A client for the Kubernetes CRI v1 API (`runtime.v1` RuntimeService and ImageService) over
//! containerd's unix socket.
//!
//! `virtctl local` and the integration tests drive containerd exactly as the kubelet does, so
//! both talk CRI rather than containerd's own API: what works through this client works under a
//! kubelet. The wire types are the generated ones from the `k8s-cri` crate, re-exported as
//! [`api`]; this module adds a connection over a unix socket, one method per RPC returning the
//! useful part of the answer, and errors that name the RPC that failed with its gRPC status.
//!
//! [`Cri`] is async; [`blocking::BlockingCri`] wraps it with a private runtime for callers (tests,
//! `Drop` impls) that are not async. [`log`] reads the CRI's container log files; [`attach`]
//! opens the stream behind Attach.

pub mod attach;
pub mod blocking;
pub mod log;

use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use api::image_service_client::ImageServiceClient;
use api::runtime_service_client::RuntimeServiceClient;
pub use k8s_cri::v1 as api;

/// containerd's default gRPC socket, where the CRI plugin listens.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// How long establishing the connection may take: a socket that exists but whose daemon does
/// not answer must fail the caller, not hang it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking to the CRI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the CRI at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to the CRI at {}: no answer within {after:?}", path.display())]
    ConnectTimeout { path: PathBuf, after: Duration },
    /// The runtime answered an RPC with a non-OK gRPC status. Boxed: a `Status` is large and
    /// every `Result` in this module would otherwise carry its size.
    #[error("CRI {rpc} failed: {:?}: {}", status.code(), status.message())]
    Rpc {
        rpc: &'static str,
        status: Box<tonic::Status>,
    },
    /// The runtime answered OK but left out a field the CRI says it must fill in.
    #[error("CRI {rpc} answered without `{field}`")]
    MissingField {
        rpc: &'static str,
        field: &'static str,
    },
    #[error("cannot start a runtime for the blocking CRI client: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// The gRPC status code, when the runtime answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// Whether the runtime said the pod, container or image does not exist: cleanup code treats
    /// that as success, since what it wanted gone is gone.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }
}

/// A `Result` whose error is this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn rpc_error(rpc: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Rpc {
        rpc,
        status: Box::new(status),
    }
}

/// An async CRI client. Cheap to clone: clones share one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Cri {
    socket: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    timeout: Option<Duration>,
}

impl Cri {
    /// Connects to the CRI on the unix socket `path` (for containerd usually
    /// [`DEFAULT_SOCKET`]). The connection is made now, so a missing or dead socket is reported
    /// here rather than at the first RPC.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let socket = path.as_ref().to_path_buf();
        let dial = socket.clone();
        // The URI is required by tonic but never used: the connector below ignores it and
        // always dials the socket.
        let endpoint = Endpoint::from_static("http://localhost").connect_timeout(CONNECT_TIMEOUT);
        let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let dial = dial.clone();
            async move { UnixStream::connect(dial).await.map(TokioIo::new) }
        }));
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(source)) => {
                return Err(Error::Connect {
                    path: socket,
                    source,
                })
            }
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    path: socket,
                    after: CONNECT_TIMEOUT,
                })
            }
        };
        Ok(Cri {
            socket,
            runtime: RuntimeServiceClient::new(channel.clone()),
            image: ImageServiceClient::new(channel),
            timeout: None,
        })
    }

    /// The same client with a deadline on every RPC (none by default). `stop_container` adds
    /// its grace period to it, since the runtime may legitimately wait that long.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.request_with_extra(message, Duration::ZERO)
    }

    fn request_with_extra<T>(&self, message: T, extra: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = self.timeout {
            request.set_timeout(timeout + extra);
        }
        request
    }

    /// The runtime's name and versions (`Version`); also the cheapest "is it up" probe.
    pub async fn version(&self) -> Result<api::VersionResponse> {
        let request = self.request(api::VersionRequest {
            version: "v1".to_string(),
        });
        let response = self.runtime.clone().version(request).await;
        Ok(response.map_err(rpc_error("Version"))?.into_inner())
    }

    /// The runtime's conditions (`Status`): `RuntimeReady`, and `NetworkReady` once a CNI
    /// configuration is loaded. `verbose` adds the runtime's configuration to `info`.
    pub async fn status(&self, verbose: bool) -> Result<api::StatusResponse> {
        let request = self.request(api::StatusRequest { verbose });
        let response = self.runtime.clone().status(request).await;
        Ok(response.map_err(rpc_error("Status"))?.into_inner())
    }

    /// Creates and starts a pod sandbox (`RunPodSandbox`) under the runtime handler named by
    /// `runtime_handler` (`""` is the runtime's default, `"virtshim"` is ours); gives its id.
    pub async fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let request = self.request(api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.to_string(),
        });
        let response = self.runtime.clone().run_pod_sandbox(request).await;
        let id = response
            .map_err(rpc_error("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id;
        if id.is_empty() {
            return Err(Error::MissingField {
                rpc: "RunPodSandbox",
                field: "pod_sandbox_id",
            });
        }
        Ok(id)
    }

    /// Stops a pod sandbox and every container in it (`StopPodSandbox`). Idempotent.
    pub async fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let request = self.request(api::StopPodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
        });
        let response = self.runtime.clone().stop_pod_sandbox(request).await;
        response.map_err(rpc_error("StopPodSandbox"))?;
        Ok(())
    }

    /// Removes a stopped pod sandbox and its containers (`RemovePodSandbox`).
    pub async fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let request = self.request(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
        });
        let response = self.runtime.clone().remove_pod_sandbox(request).await;
        response.map_err(rpc_error("RemovePodSandbox"))?;
        Ok(())
    }

    /// A pod sandbox's status (`PodSandboxStatus`); with `verbose`, `info` holds the runtime's
    /// details (for containerd: the OCI spec, the netns path, the pid).
    pub async fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse> {
        let request = self.request(api::PodSandboxStatusRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
            verbose,
        });
        let response = self.runtime.clone().pod_sandbox_status(request).await;
        let response = response
            .map_err(rpc_error("PodSandboxStatus"))?
            .into_inner();
        if response.status.is_none() {
            return Err(Error::MissingField {
                rpc: "PodSandboxStatus",
                field: "status",
            });
        }
        Ok(response)
    }

    /// The pod sandboxes the runtime knows (`ListPodSandbox`), optionally filtered.
    pub async fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>> {
        let request = self.request(api::ListPodSandboxRequest { filter });
        let response = self.runtime.clone().list_pod_sandbox(request).await;
        Ok(response
            .map_err(rpc_error("ListPodSandbox"))?
            .into_inner()
            .items)
    }

    /// Creates a container in a pod sandbox (`CreateContainer`); gives its id. The CRI wants the
    /// sandbox's config again, exactly as given to `run_pod_sandbox`.
    pub async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let request = self.request(api::CreateContainerRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        });
        let response = self.runtime.clone().create_container(request).await;
        let id = response
            .map_err(rpc_error("CreateContainer"))?
            .into_inner()
            .container_id;
        if id.is_empty() {
            return Err(Error::MissingField {
                rpc: "CreateContainer",
                field: "container_id",
            });
        }
        Ok(id)
    }

    /// Starts a created container (`StartContainer`).
    pub async fn start_container(&self, container_id: &str) -> Result<()> {
        let request = self.request(api::StartContainerRequest {
            container_id: container_id.to_string(),
        });
        let response = self.runtime.clone().start_container(request).await;
        response.map_err(rpc_error("StartContainer"))?;
        Ok(())
    }

    /// Stops a container (`StopContainer`): SIGTERM (or the image's stop signal), then SIGKILL
    /// after `grace` (whole seconds, as the CRI counts them). Idempotent.
    pub async fn stop_container(&self, container_id: &str, grace: Duration) -> Result<()> {
        let seconds = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let request = self.request_with_extra(
            api::StopContainerRequest {
                container_id: container_id.to_string(),
                timeout: seconds,
            },
            grace,
        );
        let response = self.runtime.clone().stop_container(request).await;
        response.map_err(rpc_error("StopContainer"))?;
        Ok(())
    }

    /// Removes a container (`RemoveContainer`); a running one is killed first.
    pub async fn remove_container(&self, container_id: &str) -> Result<()> {
        let request = self.request(api::RemoveContainerRequest {
            container_id: container_id.to_string(),
        });
        let response = self.runtime.clone().remove_container(request).await;
        response.map_err(rpc_error("RemoveContainer"))?;
        Ok(())
    }

    /// A container's status (`ContainerStatus`): state, exit code, reason, `log_path`; with
    /// `verbose`, `info` holds the runtime's details (for containerd: `info` → pid, OCI spec).
    pub async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse> {
        let request = self.request(api::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose,
        });
        let response = self.runtime.clone().container_status(request).await;
        let response = response.map_err(rpc_error("ContainerStatus"))?.into_inner();
        if response.status.is_none() {
            return Err(Error::MissingField {
                rpc: "ContainerStatus",
                field: "status",
            });
        }
        Ok(response)
    }

    /// A container's resource usage (`ContainerStats`): CPU and memory, as `crictl stats` shows.
    pub async fn container_stats(&self, container_id: &str) -> Result<api::ContainerStats> {
        let request = self.request(api::ContainerStatsRequest {
            container_id: container_id.to_string(),
        });
        let response = self.runtime.clone().container_stats(request).await;
        response
            .map_err(rpc_error("ContainerStats"))?
            .into_inner()
            .stats
            .ok_or(Error::MissingField {
                rpc: "ContainerStats",
                field: "stats",
            })
    }

    /// A streaming URL for attaching to a container's stdio (`Attach`), what `kubectl attach`
    /// and `crictl attach` follow: the runtime's streaming server speaks the Kubernetes
    /// remote-command protocol (SPDY or WebSocket channels) there.
    pub async fn attach(&self, container_id: &str, tty: bool) -> Result<String> {
        let request = self.request(api::AttachRequest {
            container_id: container_id.to_string(),
            stdin: true,
            tty,
            stdout: true,
            stderr: !tty,
        });
        let response = self.runtime.clone().attach(request).await;
        Ok(response.map_err(rpc_error("Attach"))?.into_inner().url)
    }

    /// A streaming URL for forwarding `ports` of the pod's network namespace (`PortForward`),
    /// what `kubectl port-forward` follows: the Kubernetes port-forward protocol (SPDY or
    /// WebSocket channels, a data and an error channel per port).
    pub async fn port_forward(&self, pod_sandbox_id: &str, ports: &[i32]) -> Result<String> {
        let request = self.request(api::PortForwardRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
            port: ports.to_vec(),
        });
        let response = self.runtime.clone().port_forward(request).await;
        Ok(response.map_err(rpc_error("PortForward"))?.into_inner().url)
    }

    /// The containers the runtime knows (`ListContainers`), optionally filtered (by pod, state,
    /// labels).
    pub async fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>> {
        let request = self.request(api::ListContainersRequest { filter });
        let response = self.runtime.clone().list_containers(request).await;
        Ok(response
            .map_err(rpc_error("ListContainers"))?
            .into_inner()
            .containers)
    }

    /// An image the runtime has (`ImageStatus`), or `None` when it has no such image (the CRI
    /// answers OK with an empty image, not NotFound).
    pub async fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        let request = self.request(api::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        });
        let response = self.image.clone().image_status(request).await;
        Ok(response
            .map_err(rpc_error("ImageStatus"))?
            .into_inner()
            .image)
    }

    /// Every image the runtime has (`ListImages`).
    pub async fn list_images(&self) -> Result<Vec<api::Image>> {
        let request = self.request(api::ListImagesRequest { filter: None });
        let response = self.image.clone().list_images(request).await;
        Ok(response
            .map_err(rpc_error("ListImages"))?
            .into_inner()
            .images)
    }
}

/// An `ImageSpec` naming `image` with nothing else set, as the kubelet sends it.
pub fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_name_the_rpc_and_the_code() {
        let error = rpc_error("RunPodSandbox")(tonic::Status::not_found("no such pod"));
        assert_eq!(
            error.to_string(),
            "CRI RunPodSandbox failed: NotFound: no such pod"
        );
        assert!(error.is_not_found());
        let error = rpc_error("Version")(tonic::Status::unavailable("down"));
        assert_eq!(error.code(), Some(tonic::Code::Unavailable));
        assert!(!error.is_not_found());
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_fails_with_its_path() {
        let dir = std::env::temp_dir().join(format!("virtctl-cri-test-{}", std::process::id()));
        let socket = dir.join("absent.sock");
        let error = Cri::connect(&socket).await.expect_err("no socket there");
        assert!(
            error.to_string().contains(&*socket.to_string_lossy()),
            "{error}"
        );
    }
}
