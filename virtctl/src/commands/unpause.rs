//! `virtctl unpause vm|vmi NAME`: `PUT …/virtualmachineinstances/{name}/unpause` (the same
//! steps as [`pause`](super::pause)).

use super::pause::{run_either, Args};
use super::ClusterArgs;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    run_either(args, cluster_args, false)
}
