//! Running the helper programs the shim uses (qemu-img, genisoimage, ip, iptables): no shell,
//! and an error that names the program, its arguments and what it printed.

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::process::Command;

/// Runs `program` with `args`; its standard output, or an error with its standard error.
pub fn run<S: AsRef<OsStr>>(program: &'static str, args: &[S]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            program,
            message: format!("cannot run it: {e}"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        Err(Error::Command {
            program,
            message: format!(
                "{}: {}",
                shown.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}
