//! The `crail` binary: everything is in the library (`crail_cli`).

fn main() -> std::process::ExitCode {
    crail_cli::main_with(std::env::args_os())
}
