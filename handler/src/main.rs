//! `virtshim-handler`: the per-node console and VNC server (see DESIGN.md). Not built yet:
//! this binary only reports its version.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") => {
            println!("virtshim-handler {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "virtshim-handler {}: the console and VNC server is not implemented yet",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
