//! One source for the settings: the built-in defaults (`Config::defaults(..).settings()`), the
//! commented template install.sh writes to /etc/mysql-snapshot.cnf, and mysql-snapshot.cnf(5)
//! name the same keys in the same groups, with the same defaults for every `[mysql-snapshot]`
//! key (the `[client]` keys' man entries show placeholders, and `user` defaults to whoever runs
//! it). And the rendered defaults read back as the same settings.
use std::collections::BTreeMap;
use std::path::Path;

use common::Config;

/// (group, key) → value.
type Listed = BTreeMap<(String, String), String>;

fn repo(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

fn built_in() -> Listed {
    Config::defaults("/nonexistent/mysql-snapshot.cnf".into())
        .settings()
        .into_iter()
        .map(|(group, key, value)| ((group.to_string(), key.to_string()), value))
        .collect()
}

/// The `# key = value  # comment` lines of install.sh's config template, by group.
fn template() -> Listed {
    let script = repo("install.sh");
    let start = script
        .find("\n[client]\n")
        .expect("install.sh holds the config template");
    let body = &script[start..];
    let body = &body[..body.find("\nEOF").expect("the template ends at EOF")];
    let mut group = String::new();
    let mut listed = Listed::new();
    for line in body.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            group = name.to_string();
        } else if let Some((key, rest)) = line.strip_prefix("# ").and_then(|l| l.split_once('=')) {
            let value = rest.split("  #").next().unwrap_or("").trim();
            listed.insert((group.clone(), key.trim().to_string()), value.to_string());
        }
    }
    listed
}

/// The `.BI key= value` entries of mysql-snapshot.cnf(5), by the `.SH "[group]"` they stand in.
fn man_page() -> Listed {
    let page = repo("packaging/man/mysql-snapshot.cnf.5");
    let mut group = String::new();
    let mut listed = Listed::new();
    for line in page.lines() {
        if let Some(name) = line
            .strip_prefix(".SH \"[")
            .and_then(|l| l.strip_suffix("]\""))
        {
            group = name.to_string();
        } else if let Some(entry) = line.strip_prefix(".BI ") {
            let entry = entry.replace("\\-", "-");
            if let Some((key, value)) = entry.split_once('=') {
                let value = value.trim().trim_matches('"').to_string();
                listed.insert((group.clone(), key.to_string()), value);
            }
        }
    }
    listed
}

fn keys(listed: &Listed) -> Vec<String> {
    listed.keys().map(|(g, k)| format!("[{g}] {k}")).collect()
}

#[test]
fn the_defaults_the_template_and_the_man_page_list_the_same_keys_and_defaults() {
    let built_in = built_in();
    let template = template();
    let man = man_page();
    assert!(built_in.len() > 20, "{built_in:?}");
    assert_eq!(keys(&template), keys(&built_in), "install.sh's template");
    assert_eq!(keys(&man), keys(&built_in), "mysql-snapshot.cnf(5)");
    for ((group, key), value) in &built_in {
        let at = (group.clone(), key.clone());
        if group == "client" {
            if key != "user" {
                assert_eq!(&template[&at], value, "template [{group}] {key}");
            }
            continue;
        }
        assert_eq!(&template[&at], value, "template [{group}] {key}");
        assert_eq!(&man[&at], value, "man page [{group}] {key}");
    }
}

#[test]
fn the_rendered_defaults_read_back_as_the_same_settings() {
    let dir = std::env::temp_dir().join(format!("mss-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("mysql-snapshot.cnf");
    let mut text = String::new();
    let mut group = "";
    for (g, key, value) in Config::defaults(file.clone()).settings() {
        if g != group {
            text.push_str(&format!("[{g}]\n"));
            group = g;
        }
        if !value.is_empty() {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    std::fs::write(&file, &text).expect("write");
    let loaded = Config::load(Some(&file));
    let _ = std::fs::remove_dir_all(&dir);
    let loaded = loaded.unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        loaded.settings(),
        Config::defaults(file).settings(),
        "{text}"
    );
}
