//! Hushphone: the window by default, and a scriptable command line.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Anything we create (profile, WAL, exported keys) is private to the user.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    cli::main()
}
