//! The phase a hypervisor agent passes as the first argument, matched case-insensitively.
//!
//! VMware Tools passes `freeze`, `thaw` or `freezeFail` (its sample config spells it `freezefail`),
//! older versions add an empty argument, and qemu-ga passes `freeze`/`thaw`. Extra and empty
//! arguments are tolerated; an unknown word is a usage error, never a guess.
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Freeze,
    Thaw,
    FreezeFail,
}

impl Phase {
    /// The phase named by the positional arguments (the first non-empty one), or `default` when
    /// there is none. `allowed` lists the phases this binary handles.
    pub fn from_args(args: &[String], default: Phase, allowed: &[Phase]) -> Result<Phase> {
        let Some(word) = args.iter().map(|a| a.trim()).find(|a| !a.is_empty()) else {
            return Ok(default);
        };
        let phase = match word.to_ascii_lowercase().as_str() {
            "freeze" => Phase::Freeze,
            "thaw" => Phase::Thaw,
            "freezefail" => Phase::FreezeFail,
            _ => return Err(Error::Usage(format!("unknown phase `{word}`"))),
        };
        if allowed.contains(&phase) {
            Ok(phase)
        } else {
            Err(Error::Usage(format!(
                "this program does not handle `{word}`; {} does",
                match phase {
                    Phase::Freeze => "mysql-snapshot-freeze",
                    _ => "mysql-snapshot-thaw",
                }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn phases_match_case_insensitively_and_extra_or_empty_arguments_are_tolerated() {
        let thaw = [Phase::Thaw, Phase::FreezeFail];
        assert_eq!(
            Phase::from_args(&args(&["freezeFail"]), Phase::Thaw, &thaw).ok(),
            Some(Phase::FreezeFail)
        );
        assert_eq!(
            Phase::from_args(&args(&["FREEZEFAIL", ""]), Phase::Thaw, &thaw).ok(),
            Some(Phase::FreezeFail)
        );
        assert_eq!(
            Phase::from_args(&args(&["", "THAW"]), Phase::Thaw, &thaw).ok(),
            Some(Phase::Thaw)
        );
        assert_eq!(
            Phase::from_args(&args(&[]), Phase::Thaw, &thaw).ok(),
            Some(Phase::Thaw)
        );
        assert_eq!(
            Phase::from_args(&args(&["Freeze", "x"]), Phase::Freeze, &[Phase::Freeze]).ok(),
            Some(Phase::Freeze)
        );
    }

    #[test]
    fn an_unknown_or_wrong_phase_is_a_usage_error() {
        assert!(Phase::from_args(&args(&["snapshot"]), Phase::Thaw, &[Phase::Thaw]).is_err());
        assert!(Phase::from_args(&args(&["thaw"]), Phase::Freeze, &[Phase::Freeze]).is_err());
    }
}
