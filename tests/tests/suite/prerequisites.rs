//! Tests of `tests/prerequisites.sh`, what `tests/run.sh` runs first on a fresh machine: it must
//! end with every program the suite needs on disk, even when one install step removes what an
//! earlier look found (Debian's qemu-system-x86 removes a backported qemu-utils, and qemu-img
//! with it).
//!
//! No package is installed: the script runs with a fake `apt-get` first on PATH that models the
//! packages as files in a private directory (installing one creates the programs it brings,
//! installing qemu-system-x86 removes qemu-img as apt does to the backport), a fake `id` (root),
//! a fake `python3` that knows whether python3-yaml was "installed", and the script's knobs (PREREQ_PATH,
//! PREREQ_POLICY, PREREQ_GALERA) pointed inside that directory.

use harness::{package, TempDir};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// Every program the script looks for, with the package that brings it.
const PROGRAMS: [(&str, &str); 13] = [
    ("mariadbd", "mariadb-server"),
    ("my_print_defaults", "mariadb-client"),
    ("qemu-ga", "qemu-guest-agent"),
    ("debootstrap", "debootstrap"),
    ("sysbench", "sysbench"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("rsync", "rsync"),
    ("promtool", "prometheus"),
    ("prometheus-node-exporter", "prometheus-node-exporter"),
    ("python3-yaml", "python3-yaml"),
    ("visudo", "sudo"),
    ("mkfs.btrfs", "btrfs-progs"),
];

/// A fake machine: `bin` holds the installed programs, `fake` the fake apt-get and python3.
struct Machine {
    dir: TempDir,
}

impl Machine {
    fn new(installed: &[&str]) -> Machine {
        let dir = TempDir::new("prereq");
        let root = dir.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("fake")).unwrap();
        for program in installed {
            program_file(&root.join("bin").join(program));
        }
        // apt-get: logs each call; `install` lays down what each package brings, as apt would.
        let mut cases = String::new();
        for (program, package) in PROGRAMS {
            cases.push_str(&format!("        {package}) touch \"$root/bin/{program}\"; chmod 755 \"$root/bin/{program}\" ;;\n"));
        }
        script(
            &root.join("fake/apt-get"),
            &format!(
                "#!/bin/sh\nroot='{root}'\necho \"$*\" >>\"$root/apt.log\"\n\
                 [ \"$1\" = install ] || exit 0\n\
                 for package in \"$@\"; do\n    case $package in\n\
                 {cases}\
                 \x20       galera-4) touch \"$root/galera.so\" ;;\n    esac\n\
                 \x20   # Debian's qemu-system-x86 breaks the backported qemu-utils: apt removes it.\n\
                 \x20   [ \"$package\" = qemu-system-x86 ] && rm -f \"$root/bin/qemu-img\"\n\
                 done\nexit 0\n",
                root = root.display()
            ),
        );
        // The script installs only as root: the fake machine's user is.
        script(&root.join("fake/id"), "#!/bin/sh\necho 0\n");
        // python3 -c 'import yaml' answers from the fake machine.
        script(
            &root.join("fake/python3"),
            &format!("#!/bin/sh\n[ -e '{}/bin/python3-yaml' ]\n", root.display()),
        );
        Machine { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the script as tests/run.sh does, with /bin/sh (dash on Debian).
    fn prepare(&self) -> Output {
        let root = self.root();
        let path = format!("{}:/usr/bin:/bin", root.join("fake").display());
        Command::new("/bin/sh")
            .arg(package::repo().join("tests/prerequisites.sh"))
            .env("PATH", path)
            .env("PREREQ_PATH", root.join("bin"))
            .env("PREREQ_POLICY", root.join("policy-rc.d"))
            .env("PREREQ_GALERA", root.join("galera.so"))
            .output()
            .unwrap()
    }

    fn has(&self, program: &str) -> bool {
        self.root().join("bin").join(program).is_file()
    }

    fn apt_log(&self) -> String {
        fs::read_to_string(self.root().join("apt.log")).unwrap_or_default()
    }
}

fn script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn program_file(path: &Path) {
    script(path, "#!/bin/sh\nexit 0\n");
}

fn explain(out: &Output, machine: &Machine) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}\napt-get calls:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        machine.apt_log()
    )
}

#[test]
fn a_backported_qemu_utils_removed_by_qemu_system_is_installed_again() {
    // The image's state: the backported qemu-utils is there (qemu-img), nothing else is.
    let machine = Machine::new(&["qemu-img"]);
    let out = machine.prepare();
    assert!(out.status.success(), "{}", explain(&out, &machine));
    assert!(
        machine.has("qemu-img"),
        "qemu-img is gone after the script: qemu-system-x86 removed it and it was not installed again\n{}",
        explain(&out, &machine)
    );
    for (program, _) in PROGRAMS {
        assert!(
            machine.has(program),
            "{program} missing\n{}",
            explain(&out, &machine)
        );
    }
    let log = machine.apt_log();
    let installs: Vec<&str> = log.lines().filter(|l| l.starts_with("install")).collect();
    assert_eq!(
        installs.len(),
        2,
        "one install, then qemu-utils again\n{log}"
    );
    assert!(
        installs[0].contains("qemu-system-x86") && !installs[0].contains("qemu-utils"),
        "the first round asks for qemu-system-x86, not qemu-utils (qemu-img was there)\n{log}"
    );
    assert!(
        installs[1].ends_with(" qemu-utils"),
        "the second round asks for qemu-utils alone\n{log}"
    );
    assert!(
        !machine.root().join("policy-rc.d").exists(),
        "the policy-rc.d the script made is removed"
    );
}

#[test]
fn a_machine_with_everything_calls_no_apt_get() {
    let all: Vec<&str> = PROGRAMS.iter().map(|(p, _)| *p).collect();
    let machine = Machine::new(&all);
    fs::write(machine.root().join("galera.so"), "").unwrap();
    let out = machine.prepare();
    assert!(out.status.success(), "{}", explain(&out, &machine));
    assert_eq!(
        machine.apt_log(),
        "",
        "nothing is missing: apt-get is not called"
    );
}

#[test]
fn a_package_apt_cannot_bring_fails_naming_it() {
    // An apt-get that "installs" rsync without its program: the script must not loop or pass.
    let machine = Machine::new(&[]);
    let apt = machine.root().join("fake/apt-get");
    let text = fs::read_to_string(&apt)
        .unwrap()
        .replace("touch \"$root/bin/rsync\"", "true");
    script(&apt, &text);
    let out = machine.prepare();
    assert!(!out.status.success(), "{}", explain(&out, &machine));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("still missing after installing: rsync"),
        "the error names what is missing\n{}",
        explain(&out, &machine)
    );
}
