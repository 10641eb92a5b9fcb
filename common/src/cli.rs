//! Command-line plumbing shared by the binaries: argument parsing with defined exit codes, the
//! version line, and turning a run's result into an exit status with one logged line.
//!
//! Usage errors exit 2 before anything else happens; nothing here touches the server or a lock.
use std::process::ExitCode;

use argh::{EarlyExit, FromArgs};

use crate::config::Config;
use crate::error::{EXIT_DEFAULT_ERROR, EXIT_USAGE};
use crate::{logging, Error};

/// Parses the process arguments; `--help` prints and exits 0, a usage error exits 2.
fn parse<T: FromArgs>() -> Result<T, ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mysql-snapshot".into());
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match T::from_args(&[&name], &rest) {
        Ok(parsed) => Ok(parsed),
        Err(EarlyExit {
            output,
            status: Ok(()),
        }) => {
            out(&format!("{output}\n"));
            Err(ExitCode::SUCCESS)
        }
        Err(EarlyExit {
            output,
            status: Err(()),
        }) => {
            eprintln!("{output}");
            eprintln!("Run {name} --help for usage.");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

/// A binary's command line: its name after `mysql-snapshot-`, and whether `--version` was asked.
pub trait Program: FromArgs {
    const NAME: &'static str;
    fn wants_version(&self) -> bool;
}

/// Parses the process arguments of `T`; `--help` and `--version` print and exit 0, a usage
/// error exits 2 (`Err` carries the exit status).
fn args<T: Program>() -> Result<T, ExitCode> {
    let args: T = parse()?;
    if args.wants_version() {
        return Err(print_version(T::NAME));
    }
    Ok(args)
}

/// The one way out of a binary: parses `T`'s arguments (`--help` and `--version` print and exit
/// 0, a bad argument exits 2), then runs `body` with them. `body`'s `Ok` is the exit status; its
/// `Err` is printed as `mysql-snapshot-NAME: error` on stderr and exits with the error's status
/// (2 for `Error::Usage`). Errors after the configuration is read are logged by `finish` instead.
pub fn run<T: Program>(body: impl FnOnce(T) -> Result<ExitCode, Error>) -> ExitCode {
    let args = match args::<T>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match body(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("mysql-snapshot-{}: {err}", T::NAME);
            ExitCode::from(err.exit_code(EXIT_DEFAULT_ERROR))
        }
    }
}

/// Prints `NAME VERSION`.
fn print_version(program: &str) -> ExitCode {
    out(&format!(
        "mysql-snapshot-{program} {}\n",
        env!("CARGO_PKG_VERSION")
    ));
    ExitCode::SUCCESS
}

/// Writes `text` to stdout as it is. A closed or failing stdout (`--status | head -1`) is not an
/// error for a printer whose exit status carries the answer: the rest is dropped, never a panic.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Loads the configuration and starts logging for `program`. On failure the error is printed
/// and the exit status to use is returned.
pub fn start(
    program: &'static str,
    config: Option<&std::path::Path>,
    to_stderr: bool,
) -> Result<Config, ExitCode> {
    match Config::load(config) {
        Ok(config) => {
            logging::init(program, &config, to_stderr);
            Ok(config)
        }
        Err(err) => {
            logging::init_stderr(program);
            log::error!("event={} {err}", err.event());
            Err(ExitCode::from(err.exit_code(EXIT_DEFAULT_ERROR)))
        }
    }
}

/// Logs a failed run once and returns its exit status.
pub fn finish(result: Result<(), Error>, config: &Config) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            log::error!("event={} {err}", err.event());
            ExitCode::from(err.exit_code(config.error_exit_code))
        }
    }
}

/// `text` on one line with no double quotes, for a `key="value"` log field.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '"' => ' ',
            c if c.is_control() => ' ',
            c => c,
        })
        .take(200)
        .collect()
}
