//! Pause and resume through containerd's task API, in the CRI's namespace: containerd then
//! knows the task is paused (`ctr task ls`, the CRI), and the shim pauses the guest's CPUs.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("connecting to containerd at {socket}: {message}")]
    Connect { socket: PathBuf, message: String },
    #[error("containerd: {0}")]
    Rpc(#[from] tonic::Status),
}

/// containerd's task service for one namespace.
#[derive(Clone, Debug)]
pub struct Tasks {
    socket: PathBuf,
    namespace: String,
}

impl Tasks {
    pub fn new(socket: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        Self {
            socket: socket.into(),
            namespace: namespace.into(),
        }
    }

    async fn client(
        &self,
    ) -> Result<
        containerd_client::services::v1::tasks_client::TasksClient<tonic::transport::Channel>,
        TaskError,
    > {
        let channel = containerd_client::connect(&self.socket)
            .await
            .map_err(|e| TaskError::Connect {
                socket: self.socket.clone(),
                message: e.to_string(),
            })?;
        Ok(containerd_client::services::v1::tasks_client::TasksClient::new(channel))
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, TaskError> {
        let mut request = tonic::Request::new(message);
        let namespace = self
            .namespace
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("namespace"))?;
        request
            .metadata_mut()
            .insert("containerd-namespace", namespace);
        Ok(request)
    }

    pub async fn pause(&self, container_id: &str) -> Result<(), TaskError> {
        let request = self.request(containerd_client::services::v1::PauseTaskRequest {
            container_id: container_id.to_owned(),
        })?;
        self.client().await?.pause(request).await?;
        Ok(())
    }

    pub async fn resume(&self, container_id: &str) -> Result<(), TaskError> {
        let request = self.request(containerd_client::services::v1::ResumeTaskRequest {
            container_id: container_id.to_owned(),
        })?;
        self.client().await?.resume(request).await?;
        Ok(())
    }
}
