//! The `crail` binary: everything is in the library (`crail_cli`); `crail cluster` runs it
//! again as each of its nodes.

fn main() -> std::process::ExitCode {
    if let Some(code) = crail_node::child_main() {
        return code;
    }
    crail_cli::main_with(std::env::args_os())
}
