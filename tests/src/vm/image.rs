//! The guest image every VM test boots: built once by `tests/vm/build-guest.sh` (debootstrap of
//! Debian 12 with MariaDB and qemu-ga) and cached under the chroots' cache directory, keyed by the
//! script's own text so that a changed script means a fresh build. One builder at a time across
//! every test binary (a file lock); an image that some QEMU still uses is never deleted, and
//! neither is one of another key used in the last `KEEP_UNUSED` (checkouts of different branches
//! share the cache: each deleting the other's image would rebuild it on every run).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::matrix::{self, cache_root};

/// Bump to rebuild every cached image even though the script is unchanged.
const LAYOUT: &str = "v1";
/// debootstrap and apt-get fetch about 150 MiB; the whole build took about a minute here.
const BUILD_LIMIT: Duration = Duration::from_secs(900);
/// How long an image of another key is kept after its last use (about 1 GiB each).
const KEEP_UNUSED: Duration = Duration::from_secs(2 * 24 * 3600);
/// In an image's directory: touched each time a test process first uses it.
const USED: &str = ".used";

/// A built guest: a qcow2 of its root filesystem and the kernel and initrd to boot it directly.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Its virtual size in bytes (a backup target must have the same).
    pub size: u64,
}

/// The script that builds the image.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vm/build-guest.sh")
}

/// The cached image, built on first use (about a minute with a nearby mirror).
pub fn guest_image() -> Result<&'static GuestImage, String> {
    static IMAGE: OnceLock<Result<GuestImage, String>> = OnceLock::new();
    IMAGE.get_or_init(ensure).as_ref().map_err(Clone::clone)
}

fn ensure() -> Result<GuestImage, String> {
    let image = ensure_built()?;
    if let Some(dir) = image.disk.parent() {
        let used = dir.join(USED);
        File::create(&used)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .map_err(|e| format!("cannot touch {}: {e}", used.display()))?;
    }
    Ok(image)
}

fn ensure_built() -> Result<GuestImage, String> {
    let text =
        fs::read(script()).map_err(|e| format!("cannot read {}: {e}", script().display()))?;
    let name = format!("guest-bookworm-{LAYOUT}-{:016x}", fnv1a(&text));
    let root = cache_root();
    let done = root.join(&name);
    if let Some(image) = complete(&done) {
        return Ok(image);
    }
    let _lock = matrix::build_lock(&root, &name)?;
    if let Some(image) = complete(&done) {
        return Ok(image);
    }
    remove_stale_images(&root, &name)?;
    let build = root.join(format!(".{name}.build-{}", std::process::id()));
    matrix::remove_tree(&build)?;
    let log_path = root.join(format!("{name}.build.log"));
    let log = File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    eprintln!(
        "vm: building the guest image in {} (once; about a minute, more on a slow mirror)",
        done.display()
    );
    let started = Instant::now();
    let mirror = matrix::debian_mirror();
    // A private mount namespace: the build's loop, bind and proc mounts never reach this
    // machine's mount table, and vanish with the script however it ends.
    let built = matrix::run(
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh"])
            .arg(script())
            .arg(&mirror)
            .arg(&build),
        &log,
        BUILD_LIMIT,
        &format!("tests/vm/build-guest.sh {mirror} {}", build.display()),
    );
    if let Err(reason) = built {
        let cleanup = matrix::remove_tree(&build)
            .err()
            .map(|e| format!("; also: {e}"))
            .unwrap_or_default();
        return Err(format!(
            "{reason}{cleanup}\n--- last lines of {} ---\n{}",
            log_path.display(),
            matrix::tail(&log_path, 25)
        ));
    }
    fs::write(
        build.join(".complete"),
        format!("layout {LAYOUT}\nmirror {mirror}\n"),
    )
    .and_then(|()| fs::rename(&build, &done))
    .map_err(|e| format!("cannot finish {}: {e}", done.display()))?;
    eprintln!("vm: the guest image is ready ({:.0?})", started.elapsed());
    complete(&done).ok_or_else(|| format!("{} is incomplete right after its build", done.display()))
}

/// The image in `dir`, if its build finished.
fn complete(dir: &Path) -> Option<GuestImage> {
    if !dir.join(".complete").is_file() {
        return None;
    }
    let disk = dir.join("root.qcow2");
    let size = virtual_size(&disk).ok()?;
    Some(GuestImage {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        disk,
        size,
    })
}

/// When the image in `dir` was last used (its build's end if it never was), if it is complete.
fn last_used(dir: &Path) -> Option<SystemTime> {
    [USED, ".complete"]
        .iter()
        .find_map(|name| fs::metadata(dir.join(name)).ok()?.modified().ok())
}

/// Images of other keys unused for `KEEP_UNUSED`, and builds that were interrupted, unless a
/// process still uses them.
fn remove_stale_images(root: &Path, keep: &str) -> Result<(), String> {
    let entries = fs::read_dir(root).map_err(|e| format!("cannot list {}: {e}", root.display()))?;
    for path in entries.filter_map(|e| Some(e.ok()?.path())) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let ours = name.starts_with("guest-") || name.starts_with(".guest-");
        if !ours || name == keep || !path.is_dir() {
            continue;
        }
        let recent = last_used(&path)
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age < KEEP_UNUSED);
        if recent {
            continue;
        }
        match matrix::process_using(&path) {
            Some(pid) => eprintln!(
                "vm: leaving {} alone: process {pid} uses it",
                path.display()
            ),
            None => matrix::remove_tree(&path)?,
        }
    }
    Ok(())
}

/// `qemu-img info`'s virtual size of an image.
pub fn virtual_size(image: &Path) -> Result<u64, String> {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(image)
        .output()
        .map_err(|e| format!("cannot run qemu-img: {e}"))?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("qemu-img info {}: {e}", image.display()))?;
    info["virtual-size"]
        .as_u64()
        .ok_or_else(|| format!("qemu-img info {} has no virtual-size", image.display()))
}

/// FNV-1a, 64 bits: a stable key for the script's text.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
