//! `dsrs`: the deepspeed_rs command-line tool.
//!
//! ```text
//! dsrs report [--json]   the environment report (accelerators, devices, memory, CPU, CUDA)
//! dsrs --version         the version
//! ```
//! Exit status: 0 on success, 1 when the report could not select an accelerator (for
//! example `DSRS_ACCELERATOR=bogus`), 2 for a usage error.

use std::io::Write;
use std::process::ExitCode;

use deepspeed_rs::report::Report;

const USAGE: &str = "\
usage: dsrs <command> [options]

commands:
  report [--json]   show the accelerator, every accelerator considered, devices, memory,
                    CPU features, CUDA driver and versions (DeepSpeed's ds_report)
  help              show this help

options:
  -V, --version     print the version
  -h, --help        show this help

environment:
  DSRS_ACCELERATOR  force an accelerator (cpu, cuda, or a plugin's name)
  DSRS_LOG          log level on standard error: off, error, warn (default), info, debug, trace
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["help"] | ["-h"] | ["--help"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["-V"] | ["--version"] | ["version"] => {
            println!(
                "dsrs {} (deepspeed_rs, C ABI {})",
                deepspeed_rs::VERSION,
                deepspeed_rs::ABI_VERSION
            );
            ExitCode::SUCCESS
        }
        ["report", rest @ ..] => report(rest),
        [other, ..] => {
            eprintln!("dsrs: unknown command {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn report(args: &[&str]) -> ExitCode {
    let mut json = false;
    for a in args {
        match *a {
            "--json" => json = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("dsrs report: unknown option {other:?} (expected --json)");
                return ExitCode::from(2);
            }
        }
    }
    let r = Report::gather();
    let mut stdout = std::io::stdout().lock();
    let written = if json {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&r.to_json()).unwrap_or_default()
        )
    } else {
        write!(stdout, "{}", r.to_text())
    };
    if written.is_err() {
        return ExitCode::from(1); // stdout closed (a pipe); nothing more to say
    }
    if let Err(e) = &r.accelerator {
        eprintln!("dsrs: error: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
