//! Command-line plumbing shared by the binaries: argument parsing with defined exit codes, the
//! version line, and the one way out of a run: `Ok` with the status that is its answer, or a
//! [`Failure`] that knows its exit status and is told once where it belongs (verify's also on
//! stderr).
//!
//! Usage errors exit 2 before the server or a lock is touched; nothing here touches either.
use std::process::ExitCode;

use argh::{EarlyExit, FromArgs};

use crate::config::Config;
use crate::error::{EXIT_DEFAULT_ERROR, EXIT_USAGE};
use crate::{logging, Error};

/// Parses the process arguments; `--help` prints and exits 0, a usage error (an argument that is
/// not UTF-8 included) exits 2.
fn parse<T: FromArgs>() -> Result<T, ExitCode> {
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let name = raw
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mysql-snapshot".into());
    let mut args = Vec::with_capacity(raw.len());
    for (i, arg) in raw.into_iter().enumerate() {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            // Where the program lies is no argument.
            Err(arg) if i == 0 => args.push(arg.to_string_lossy().into_owned()),
            Err(arg) => {
                eprintln!(
                    "{name}: argument {i} (`{}`) is not valid UTF-8: give paths and values in UTF-8 (a symlink with a UTF-8 name will do)",
                    arg.to_string_lossy()
                );
                return Err(ExitCode::from(EXIT_USAGE));
            }
        }
    }
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

/// A failed run on its one way out of [`run`]: the exit status it leaves with, and its error until
/// that is told. Made from an [`Error`] by `?` (told by `run` on stderr, exit status 1, or 2 for a
/// usage error), logged where it happens ([`Failure::logged`]), or already told
/// ([`Failure::told`]).
#[derive(Debug)]
pub struct Failure {
    code: u8,
    untold: Option<Error>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            code: error.exit_code(EXIT_DEFAULT_ERROR),
            untold: Some(error),
        }
    }
}

impl Failure {
    /// `error`, logged now as one `event=KEY message` line, leaving with its status given
    /// `error_exit_code` (the configured one once the configuration is read).
    pub fn logged(error: Error, error_exit_code: u8) -> Failure {
        log::error!("event={} {error}", error.event());
        Failure {
            code: error.exit_code(error_exit_code),
            untold: None,
        }
    }

    /// A failure already told where it belongs (to freeze, in the log, in the state file),
    /// leaving with `code`.
    pub fn told(code: u8) -> Failure {
        Failure { code, untold: None }
    }
}

/// The one way out of a binary: parses `T`'s arguments (`--help` and `--version` print and exit
/// 0, a bad argument exits 2), then runs `body` with them. `body`'s `Ok` is the exit status that
/// answers (verify's verdict, `--status`'s level, `--run`'s statuses); its `Err` is a [`Failure`],
/// whose error, if not yet told, is printed as `mysql-snapshot-NAME: error` on stderr.
pub fn run<T: Program>(body: impl FnOnce(T) -> Result<ExitCode, Failure>) -> ExitCode {
    let args = match args::<T>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match body(args) {
        Ok(code) => code,
        Err(Failure { code, untold }) => {
            if let Some(err) = untold {
                eprintln!("mysql-snapshot-{}: {err}", T::NAME);
            }
            ExitCode::from(code)
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

/// Loads the configuration and starts logging for `program`. A configuration that cannot be used
/// is logged on stderr and fails with its status (1).
pub fn start(
    program: &'static str,
    config: Option<&std::path::Path>,
    to_stderr: bool,
) -> Result<Config, Failure> {
    match Config::load(config) {
        Ok(config) => {
            logging::init(program, &config, to_stderr);
            Ok(config)
        }
        Err(err) => {
            logging::init_stderr(program);
            Err(Failure::logged(err, EXIT_DEFAULT_ERROR))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_leaves_with_the_status_its_error_documents() {
        let usage = Failure::from(Error::Usage("bad".into()));
        assert_eq!((usage.code, usage.untold.is_some()), (2, true));
        let config = Failure::from(Error::Config {
            file: "/x".into(),
            line: None,
            message: "bad".into(),
        });
        assert_eq!(config.code, 1);
        // Once the configuration is read, its error-exit-code applies, except to usage and
        // configuration errors; a logged failure is not told again.
        let refused = Failure::logged(
            Error::Unreachable {
                message: "m".into(),
            },
            7,
        );
        assert_eq!((refused.code, refused.untold.is_some()), (7, false));
        let usage = Failure::logged(Error::Usage("bad".into()), 7);
        assert_eq!(usage.code, 2);
        assert_eq!(Failure::told(125).code, 125);
    }
}
