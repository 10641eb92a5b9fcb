//! Which cloud snapshot agents are installed here, for `--check`: Google's guest agent, Azure's
//! VM agent (whose VMSnapshot extension runs ScriptRunner) and the AWS Systems Manager agent, and
//! whether our hooks are set up so that each will really call us.
//!
//! Each agent has one classic way to be set up wrong and stay silent: Google runs no script
//! unless `[Snapshots] enabled = true`; Azure skips scripts (and its config) whose owner or mode
//! is wrong; AWS runs only what the SSM document names. It only reads files under `root` (`/`
//! outside tests); it never talks to an agent and never changes anything.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::level::Level;

/// The marker line every hook written by install.sh carries.
const MARKER: &str = "# installed by mysql-snapshot install.sh";

const GOOGLE_AGENTS: [&str; 3] = [
    "usr/bin/google_guest_agent",
    "usr/bin/google_guest_agent_manager",
    "usr/bin/guest-agent",
];
const GOOGLE_PRE: &str = "etc/google/snapshots/pre.sh";
const GOOGLE_POST: &str = "etc/google/snapshots/post.sh";
/// Read in this order; a later file overrides an earlier one (as the agent merges them).
const GOOGLE_CONFIGS: [&str; 3] = [
    "etc/default/instance_configs.cfg.template",
    "etc/default/instance_configs.cfg.distro",
    "etc/default/instance_configs.cfg",
];

const AZURE_AGENTS: [&str; 2] = ["usr/sbin/waagent", "usr/bin/waagent"];
const AZURE_CONFIG: &str = "etc/azure/VMSnapshotScriptPluginConfig.json";

const SSM_AGENTS: [&str; 3] = [
    "usr/bin/amazon-ssm-agent",
    "usr/sbin/amazon-ssm-agent",
    "snap/amazon-ssm-agent/current/amazon-ssm-agent",
];

/// One line per cloud agent: (name, level, text). An absent agent with none of our files is one
/// short `ok` line; an agent that would run no hook of ours (or one it would skip) is a `warn`;
/// nothing here fails the check (the hypervisor agents' lines do not either).
pub(crate) fn report(root: &Path) -> Vec<(&'static str, Level, String)> {
    let line = |name, (level, text)| (name, level, text);
    vec![
        line("google", google(root)),
        line("azure", azure(root)),
        line("aws-ssm", aws(root)),
    ]
}

fn first_present(root: &Path, paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(|p| root.join(p)).find(|p| p.exists())
}

fn is_ours(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.lines().any(|l| l == MARKER))
}

fn google(root: &Path) -> (Level, String) {
    let agent = first_present(root, &GOOGLE_AGENTS);
    let pre = root.join(GOOGLE_PRE);
    let post = root.join(GOOGLE_POST);
    let (hooks_level, hooks) = match (is_ours(&pre), is_ours(&post)) {
        (true, true) => (Level::Ok, "hooks /etc/google/snapshots/pre.sh and post.sh installed"),
        (false, false) if !pre.exists() && !post.exists() => (Level::Ok, ""),
        _ => (Level::Warn, "WARNING: /etc/google/snapshots/pre.sh and post.sh are not both ours: a missing post.sh fails every snapshot; run install.sh --gcp"),
    };
    // With the agent there, our hooks run only if the agent runs scripts at all.
    let ours = match (&agent, hooks) {
        (Some(_), hooks) if !hooks.is_empty() && google_snapshots_enabled(root) => {
            (hooks_level, format!("{hooks}; [Snapshots] enabled = true"))
        }
        (Some(_), hooks) if !hooks.is_empty() => (
            Level::Warn,
            format!("{hooks}; WARNING: [Snapshots] enabled is not true in /etc/default/instance_configs.cfg, so the agent runs no script and every snapshot is crash-consistent: set it and restart google-guest-agent"),
        ),
        (_, hooks) => (hooks_level, hooks.to_string()),
    };
    agent_line(
        root,
        agent,
        ours,
        "no hook of ours: run install.sh --gcp (see README)",
    )
}

/// A cloud agent's line: `agent` where it was found, `ours` the level and text of what of ours is
/// set up for it ("" when nothing is), `missing` what a present agent without it lacks (a warn).
fn agent_line(
    root: &Path,
    agent: Option<PathBuf>,
    (level, ours): (Level, String),
    missing: &str,
) -> (Level, String) {
    match (agent, ours.as_str()) {
        (None, "") => (Level::Ok, "agent not found".into()),
        (None, ours) => (level, format!("agent not found; {ours}")),
        (Some(a), "") => (
            Level::Warn,
            format!("{} present but {missing}", shown(root, &a)),
        ),
        (Some(a), ours) => (level, format!("{} present; {ours}", shown(root, &a))),
    }
}

/// `[Snapshots] enabled` as the agent reads it (default off).
fn google_snapshots_enabled(root: &Path) -> bool {
    let mut enabled = false;
    for file in GOOGLE_CONFIGS {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        let mut in_section = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_section = line.eq_ignore_ascii_case("[Snapshots]");
            } else if let Some((key, value)) = line.split_once('=') {
                if in_section && key.trim().eq_ignore_ascii_case("enabled") {
                    enabled = value.trim().eq_ignore_ascii_case("true");
                }
            }
        }
    }
    enabled
}

fn azure(root: &Path) -> (Level, String) {
    let agent = first_present(root, &AZURE_AGENTS);
    let config_path = root.join(AZURE_CONFIG);
    let config = std::fs::read_to_string(&config_path).ok();
    let setup = match &config {
        None => (Level::Ok, String::new()),
        Some(text) => azure_setup(root, &config_path, text),
    };
    agent_line(
        root,
        agent,
        setup,
        &format!("no {AZURE_CONFIG_SHOWN} : run install.sh --azure (see README)"),
    )
}

const AZURE_CONFIG_SHOWN: &str = "/etc/azure/VMSnapshotScriptPluginConfig.json";

/// What the ScriptRunner config says, and whether the plugin would skip it or our scripts: `ok`
/// only when it runs our scripts, would skip none of them, and gives no backup after a refusal.
fn azure_setup(root: &Path, path: &Path, text: &str) -> (Level, String) {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
        return (
            Level::Warn,
            format!("WARNING: {AZURE_CONFIG_SHOWN} is not valid JSON: the plugin ignores it"),
        );
    };
    let mut problems = Vec::new();
    if let Some(why) = wrong_owner_or_mode(path) {
        problems.push(format!("{AZURE_CONFIG_SHOWN} {why}"));
    }
    let mut ours = Vec::new();
    for key in ["preScriptLocation", "postScriptLocation"] {
        let Some(script) = doc[key].as_str() else {
            problems.push(format!("{key} is not set"));
            continue;
        };
        let on_disk = root.join(script.trim_start_matches('/'));
        if is_ours(&on_disk) {
            ours.push(script.to_string());
        }
        if let Some(why) = wrong_owner_or_mode(&on_disk) {
            problems.push(format!("{script} {why}"));
        }
    }
    let freeze = match doc["fsFreezeEnabled"].as_bool() {
        Some(false) => "fsFreezeEnabled false (our pre-script then syncs the filesystems itself)",
        _ => "fsFreezeEnabled true",
    };
    let mut text = match ours.len() {
        2 => format!("ScriptRunner runs our scripts; {freeze}"),
        _ => format!("WARNING: {AZURE_CONFIG_SHOWN} does not point preScriptLocation and postScriptLocation at /etc/azure/mysql-snapshot-pre.sh and -post.sh"),
    };
    let continues = doc["continueBackupOnFailure"].as_bool() == Some(true);
    if continues {
        text.push_str("; note: continueBackupOnFailure is true, so a refused lock still gives a (crash-consistent) backup");
    }
    if !problems.is_empty() {
        text.push_str(&format!(
            "; WARNING: the plugin skips what is not root-owned without group/other bits: {}",
            problems.join(", ")
        ));
    }
    let level = Level::warn_if(ours.len() != 2 || continues || !problems.is_empty());
    (level, text)
}

/// Why the Azure plugin would skip `path`: not root-owned, or group/other bits set.
fn wrong_owner_or_mode(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        Some(format!("has mode {mode:04o} (chmod go= it)"))
    } else if meta.uid() != 0 {
        Some(format!("is owned by uid {}, not root", meta.uid()))
    } else {
        None
    }
}

/// Always `ok`: what the agent runs is the SSM document registered in AWS, which cannot be read
/// from here; the line says where it comes from.
fn aws(root: &Path) -> (Level, String) {
    let text = match first_present(root, &SSM_AGENTS) {
        Some(a) => format!(
            "{} present; DLM pre/post scripts run only the SSM document you register (packaging/aws/mysql-snapshot-ssm-document.yaml, see README), which calls the binaries in /usr/local/sbin",
            shown(root, &a)
        ),
        None => "agent not found".into(),
    };
    (Level::Ok, text)
}

/// `path` as it is on the machine (without the test root).
fn shown(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rest) => format!("/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Root(PathBuf);
    impl Root {
        fn new(tag: &str) -> Root {
            let dir = std::env::temp_dir().join(format!(
                "mss-clouds-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp root");
            Root(dir)
        }
        fn write(&self, path: &str, text: &str, mode: u32) {
            let full = self.0.join(path);
            std::fs::create_dir_all(full.parent().expect("a parent")).expect("dirs");
            std::fs::write(&full, text).expect("write");
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The level and text of the line for `name`.
    fn entry(root: &Root, name: &str) -> (Level, String) {
        report(&root.0)
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, level, text)| (level, text))
            .expect("a line per agent")
    }

    #[test]
    fn no_agent_and_no_hook_says_agent_not_found_and_is_ok() {
        let root = Root::new("none");
        for name in ["google", "azure", "aws-ssm"] {
            assert_eq!(entry(&root, name), (Level::Ok, "agent not found".into()));
        }
    }

    #[test]
    fn google_hooks_without_snapshots_enabled_warn_that_no_script_runs() {
        let root = Root::new("google");
        root.write("usr/bin/google_guest_agent", "", 0o755);
        let (level, text) = entry(&root, "google");
        assert!(text.contains("no hook of ours: run install.sh --gcp"));
        assert_eq!(level, Level::Warn, "{text}");
        root.write(GOOGLE_PRE, &format!("#!/bin/sh\n{MARKER}\n"), 0o700);
        root.write(GOOGLE_POST, &format!("#!/bin/sh\n{MARKER}\n"), 0o700);
        let (level, text) = entry(&root, "google");
        assert_eq!(level, Level::Warn, "{text}");
        assert!(text.contains("hooks /etc/google/snapshots/pre.sh and post.sh installed"));
        assert!(
            text.contains("WARNING: [Snapshots] enabled is not true"),
            "{text}"
        );
        root.write(
            "etc/default/instance_configs.cfg",
            "[Accounts]\nenabled = false\n[Snapshots]\nenabled = true\ntimeout_in_seconds = 60\n",
            0o644,
        );
        let (level, text) = entry(&root, "google");
        assert!(text.ends_with("[Snapshots] enabled = true"), "{text}");
        assert_eq!(level, Level::Ok, "{text}");
    }

    #[test]
    fn azure_config_pointing_at_our_scripts_is_recognised_and_a_bad_mode_is_named() {
        let root = Root::new("azure");
        root.write("usr/sbin/waagent", "", 0o755);
        root.write(
            "etc/azure/mysql-snapshot-pre.sh",
            &format!("{MARKER}\n"),
            0o700,
        );
        root.write(
            "etc/azure/mysql-snapshot-post.sh",
            &format!("{MARKER}\n"),
            0o755,
        );
        root.write(
            AZURE_CONFIG,
            r#"{"pluginName": "ScriptRunner", "preScriptLocation": "/etc/azure/mysql-snapshot-pre.sh",
                "postScriptLocation": "/etc/azure/mysql-snapshot-post.sh", "fsFreezeEnabled": false}"#,
            0o600,
        );
        let (level, text) = entry(&root, "azure");
        assert_eq!(level, Level::Warn, "a script the plugin skips: {text}");
        assert!(text.contains("ScriptRunner runs our scripts"), "{text}");
        assert!(text.contains("fsFreezeEnabled false"), "{text}");
        assert!(
            text.contains("/etc/azure/mysql-snapshot-post.sh has mode 0755"),
            "{text}"
        );
        root.write(AZURE_CONFIG, "{not json", 0o600);
        let (level, text) = entry(&root, "azure");
        assert!(text.contains("not valid JSON"));
        assert_eq!(level, Level::Warn, "{text}");
    }

    #[test]
    fn the_ssm_agent_is_named_with_where_the_document_comes_from_and_is_ok() {
        let root = Root::new("aws");
        root.write("usr/bin/amazon-ssm-agent", "", 0o755);
        let (level, text) = entry(&root, "aws-ssm");
        assert!(text.contains("mysql-snapshot-ssm-document.yaml"));
        assert_eq!(level, Level::Ok, "{text}");
    }
}
