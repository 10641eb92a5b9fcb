//! How much one line of `mysql-snapshot-freeze --check` asks of the DBA: `ok` when there is
//! nothing to act on, `warn` when a freeze would work but something here weakens the snapshot or
//! is not set up (a hook no agent runs, a risky setting, a privilege only a role may grant), `FAIL`
//! when a real freeze would fail. Only a `FAIL` fails `--check`.
//!
//! It only names the levels and how they are printed; each line's source decides its level.

/// The level of one `--check` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// Nothing for the DBA to act on.
    Ok,
    /// A freeze would work, but this line describes something to act on.
    Warn,
    /// A real freeze would fail (or refuse) because of this line.
    Fail,
}

impl Level {
    /// The four-character mark that opens the line in the text report.
    pub(crate) fn mark(self) -> &'static str {
        match self {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }

    /// The value of the `level` key in `--check --json`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }

    /// `Warn` when `attention` holds, else `Ok`.
    pub(crate) fn warn_if(attention: bool) -> Level {
        if attention {
            Level::Warn
        } else {
            Level::Ok
        }
    }
}
