//! The CRI client for callers that are not async: tests, `Drop` impls, small tools.
//!
//! It owns a single-threaded tokio runtime and runs each call to completion on it, so the
//! caller needs no runtime of its own. Like every `block_on`, its methods panic when called from
//! inside an async task: use [`Cri`] there.

use super::{api, Cri, Result};
use std::path::Path;
use std::time::Duration;

/// A blocking [`Cri`]. Each method is the async one of the same name, run to completion.
#[derive(Debug)]
pub struct BlockingCri {
    runtime: tokio::runtime::Runtime,
    cri: Cri,
}

impl BlockingCri {
    /// Connects to the CRI on the unix socket `path`; see [`Cri::connect`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(super::Error::Runtime)?;
        let cri = runtime.block_on(Cri::connect(path))?;
        Ok(BlockingCri { runtime, cri })
    }

    /// The same client with a deadline on every RPC; see [`Cri::with_timeout`].
    pub fn with_timeout(self, timeout: Duration) -> Self {
        BlockingCri {
            runtime: self.runtime,
            cri: self.cri.with_timeout(timeout),
        }
    }

    /// The async client inside (only usable through this client's runtime).
    pub fn cri(&self) -> &Cri {
        &self.cri
    }

    pub fn version(&self) -> Result<api::VersionResponse> {
        self.runtime.block_on(self.cri.version())
    }

    pub fn status(&self, verbose: bool) -> Result<api::StatusResponse> {
        self.runtime.block_on(self.cri.status(verbose))
    }

    pub fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        self.runtime
            .block_on(self.cri.run_pod_sandbox(config, runtime_handler))
    }

    pub fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        self.runtime
            .block_on(self.cri.stop_pod_sandbox(pod_sandbox_id))
    }

    pub fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        self.runtime
            .block_on(self.cri.remove_pod_sandbox(pod_sandbox_id))
    }

    pub fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse> {
        self.runtime
            .block_on(self.cri.pod_sandbox_status(pod_sandbox_id, verbose))
    }

    pub fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>> {
        self.runtime.block_on(self.cri.list_pod_sandbox(filter))
    }

    pub fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        self.runtime.block_on(
            self.cri
                .create_container(pod_sandbox_id, config, sandbox_config),
        )
    }

    pub fn start_container(&self, container_id: &str) -> Result<()> {
        self.runtime
            .block_on(self.cri.start_container(container_id))
    }

    pub fn stop_container(&self, container_id: &str, grace: Duration) -> Result<()> {
        self.runtime
            .block_on(self.cri.stop_container(container_id, grace))
    }

    pub fn remove_container(&self, container_id: &str) -> Result<()> {
        self.runtime
            .block_on(self.cri.remove_container(container_id))
    }

    pub fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse> {
        self.runtime
            .block_on(self.cri.container_status(container_id, verbose))
    }

    pub fn container_stats(&self, container_id: &str) -> Result<api::ContainerStats> {
        self.runtime
            .block_on(self.cri.container_stats(container_id))
    }

    pub fn attach(&self, container_id: &str, tty: bool) -> Result<String> {
        self.runtime.block_on(self.cri.attach(container_id, tty))
    }

    pub fn port_forward(&self, pod_sandbox_id: &str, ports: &[i32]) -> Result<String> {
        self.runtime
            .block_on(self.cri.port_forward(pod_sandbox_id, ports))
    }

    pub fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>> {
        self.runtime.block_on(self.cri.list_containers(filter))
    }

    pub fn image_status(&self, image: &str) -> Result<Option<api::Image>> {
        self.runtime.block_on(self.cri.image_status(image))
    }

    pub fn list_images(&self) -> Result<Vec<api::Image>> {
        self.runtime.block_on(self.cri.list_images())
    }
}
