//! Which freeze hook the QEMU guest agent will run, for `--check`: from the running agent's
//! command line (`-F[PATH]`, `--fsfreeze-hook[=PATH]`) or else its configuration file
//! (`[general] fsfreeze-hook=` in `/etc/qemu/qemu-ga.conf`, or the file named by `-c`). Debian's
//! service passes neither, so a package install without README's `qemu-ga.conf` leaves every
//! snapshot crash-consistent — the one mistake this exists to catch.
//!
//! It only reads /proc and the configuration; it never talks to the agent.
use std::path::Path;

use crate::level::Level;

/// The agent's default configuration file and the hook `-F` names without a path (Debian and
/// upstream builds: CONFDIR is /etc/qemu).
const DEFAULT_CONF: &str = "/etc/qemu/qemu-ga.conf";
const DEFAULT_HOOK: &str = "/etc/qemu/fsfreeze-hook";

/// The hook the agent runs and where that was read; `None`: it runs none.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Configured {
    pub(crate) hook: String,
    pub(crate) from: String,
}

/// The hook named by the agent's arguments (`argv` without the program), else by `conf_text`, the
/// text of its configuration file `conf_path`.
pub(crate) fn configured(
    argv: &[String],
    conf_path: &str,
    conf_text: Option<&str>,
) -> Option<Configured> {
    let mut from_args = None;
    for arg in argv {
        let hook = match arg.as_str() {
            "-F" | "--fsfreeze-hook" => Some(DEFAULT_HOOK.to_string()),
            a if a.starts_with("--fsfreeze-hook=") => {
                Some(a["--fsfreeze-hook=".len()..].to_string())
            }
            a if a.starts_with("-F") => Some(a[2..].to_string()),
            _ => None,
        };
        if hook.is_some() {
            from_args = hook; // the last one wins, as with getopt
        }
    }
    if let Some(hook) = from_args {
        return Some(Configured {
            hook,
            from: "the running qemu-ga's command line".into(),
        });
    }
    let mut in_general = false;
    let mut found = None;
    for line in conf_text?.lines().map(str::trim) {
        if line.starts_with('[') {
            in_general = line == "[general]";
        } else if let Some((key, value)) = line.split_once('=') {
            if in_general && key.trim() == "fsfreeze-hook" {
                found = Some(value.trim().to_string());
            }
        }
    }
    found.filter(|h| !h.is_empty()).map(|hook| Configured {
        hook,
        from: format!("fsfreeze-hook in {conf_path}"),
    })
}

/// The `--check` line for an agent that is installed: which hook it runs, and what that means.
/// Only our own hook run directly is `ok`: with no hook, the stock dispatcher (which ignores our
/// exit status) or another hook, a snapshot can be taken without the lock.
pub(crate) fn describe(
    configured: Option<&Configured>,
    dispatcher_script_installed: bool,
) -> (Level, String) {
    let Some(Configured { hook, from }) = configured else {
        return (
            Level::Warn,
            format!(
                "qemu-ga runs NO freeze hook (none on its command line, no fsfreeze-hook in \
             {DEFAULT_CONF}): its snapshots take no lock and are only crash-consistent. Add \
             `[general]` / `fsfreeze-hook=/usr/sbin/mysql-snapshot-qemu-hook` to {DEFAULT_CONF} \
             and restart qemu-guest-agent (README: Proxmox quick start; docs/platforms.md)"
            ),
        );
    };
    if hook.ends_with("/mysql-snapshot-qemu-hook") {
        return (
            Level::Ok,
            format!("qemu-ga runs {hook} ({from}): a lock that cannot be taken fails the freeze"),
        );
    }
    if hook == DEFAULT_HOOK && dispatcher_script_installed {
        return (
            Level::Warn,
            format!(
                "qemu-ga runs the stock dispatcher {hook} ({from}), which runs our fsfreeze-hook.d \
                 script but ignores its exit status: a lock that cannot be taken does not stop the \
                 snapshot. Point fsfreeze-hook at /usr/sbin/mysql-snapshot-qemu-hook instead"
            ),
        );
    }
    (
        Level::Warn,
        format!("qemu-ga runs {hook} ({from}), which is not mysql-snapshot's hook"),
    )
}

/// What the agent installed here will run: the first running qemu-ga's arguments (its `-c` names
/// the configuration file), else the default configuration file.
pub(crate) fn effective() -> Option<Configured> {
    let argv = running_agent_argv().unwrap_or_default();
    let conf_path = argv
        .windows(2)
        .find(|w| w[0] == "-c" || w[0] == "--config")
        .map(|w| w[1].clone())
        .unwrap_or_else(|| DEFAULT_CONF.to_string());
    let conf_text = std::fs::read_to_string(&conf_path).ok();
    configured(&argv, &conf_path, conf_text.as_deref())
}

/// The arguments of a running qemu-ga (without the program name).
fn running_agent_argv() -> Option<Vec<String>> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let dir = entry.ok()?.path();
        let exe = std::fs::read_link(dir.join("exe")).ok()?;
        if exe.file_name() != Some(Path::new("qemu-ga").as_os_str()) {
            return None;
        }
        let raw = std::fs::read(dir.join("cmdline")).ok()?;
        let mut argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (!argv.is_empty()).then(|| argv.split_off(1))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_line_wins_and_a_bare_f_means_the_stock_dispatcher() {
        let conf = "[general]\nfsfreeze-hook=/from/conf\n";
        let got = configured(
            &args(&["-F/usr/sbin/mysql-snapshot-qemu-hook"]),
            DEFAULT_CONF,
            Some(conf),
        );
        assert_eq!(got.unwrap().hook, "/usr/sbin/mysql-snapshot-qemu-hook");
        let got = configured(
            &args(&["-m", "virtio-serial", "-F"]),
            DEFAULT_CONF,
            Some(conf),
        );
        assert_eq!(got.unwrap().hook, DEFAULT_HOOK);
        let got = configured(&args(&["--fsfreeze-hook=/x"]), DEFAULT_CONF, None);
        assert_eq!(got.unwrap().hook, "/x");
    }

    #[test]
    fn the_config_file_is_read_only_in_its_general_group_and_debians_default_runs_no_hook() {
        let readme = "[general]\nfsfreeze-hook=/usr/sbin/mysql-snapshot-qemu-hook\n";
        let got = configured(&[], DEFAULT_CONF, Some(readme)).unwrap();
        assert_eq!(got.hook, "/usr/sbin/mysql-snapshot-qemu-hook");
        assert!(got.from.contains(DEFAULT_CONF));
        assert_eq!(
            configured(&[], DEFAULT_CONF, Some("[other]\nfsfreeze-hook=/x\n")),
            None
        );
        assert_eq!(
            configured(&[], DEFAULT_CONF, Some("[general]\nfsfreeze-hook=\n")),
            None
        );
        // Debian's unit passes no -F and ships no qemu-ga.conf.
        assert_eq!(
            configured(&args(&["--method=virtio-serial"]), DEFAULT_CONF, None),
            None
        );
    }

    #[test]
    fn each_hook_gets_the_line_that_says_what_it_means_and_only_our_own_hook_is_ok() {
        let (level, text) = describe(None, true);
        assert_eq!(level, Level::Warn, "{text}");
        assert!(text.contains("NO freeze hook"));
        let ours = Configured {
            hook: "/usr/sbin/mysql-snapshot-qemu-hook".into(),
            from: "x".into(),
        };
        let (level, text) = describe(Some(&ours), true);
        assert_eq!(level, Level::Ok, "{text}");
        assert!(text.contains("fails the freeze"));
        let stock = Configured {
            hook: DEFAULT_HOOK.into(),
            from: "x".into(),
        };
        let (level, text) = describe(Some(&stock), true);
        assert_eq!(level, Level::Warn, "{text}");
        assert!(text.contains("ignores its exit status"));
        let (level, text) = describe(Some(&stock), false);
        assert_eq!(level, Level::Warn, "{text}");
        assert!(text.contains("not mysql-snapshot's hook"));
    }
}
