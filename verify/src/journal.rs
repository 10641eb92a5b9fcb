//! Whether the filesystem a copy is read from shows one moment of it. An ext3/ext4 copy taken
//! while the filesystem ran (no freeze) carries changes in its journal; mounted without journal
//! recovery (`noload`, shown as `norecovery`) it shows the metadata of the journal's last
//! checkpoint — perhaps the last freeze's, with its held info file and binlog sizes — over data
//! written since, and every check could match a moment the copy is not.
//!
//! Owns reading the mounted device's superblock (its magic and the `needs_recovery` flag). It only
//! ever reads the device, never the copy's files, and never mounts or replays anything.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use common::storage;

/// Where the superblock of an ext2/3/4 filesystem starts, and its size.
const SUPERBLOCK_AT: u64 = 1024;
const SUPERBLOCK_LEN: usize = 1024;
/// `s_magic` (at 0x38) and `s_feature_incompat` (at 0x60) with its `RECOVER` bit.
const MAGIC: u16 = 0xEF53;
const MAGIC_AT: usize = 0x38;
const INCOMPAT_AT: usize = 0x60;
const INCOMPAT_RECOVER: u32 = 0x0004;

/// Why what is mounted at `path` cannot be verified as it is (its journal holds changes the mount
/// does not show), or `None`. A superblock that cannot be read on such a mount is a reason too:
/// then nothing says the journal is clean.
pub(crate) fn unreplayed(path: &Path) -> Option<String> {
    let mount = storage::mount_of(path)?;
    let unrecovered = mount
        .options
        .split(',')
        .any(|o| o == "norecovery" || o == "noload");
    if !matches!(mount.fstype.as_str(), "ext3" | "ext4") || !unrecovered {
        return None;
    }
    let said = |what: String| {
        Some(format!(
            "{} ({} on {}) is mounted without journal recovery (noload) and {what}: the mount may show an earlier moment's files over later data",
            mount.mount_point.display(),
            mount.fstype,
            mount.source
        ))
    };
    match read_superblock(Path::new(&mount.source)) {
        Ok(block) => match needs_recovery(&block) {
            Some(false) => None,
            Some(true) => said("its journal holds changes not yet replayed".into()),
            None => said("its superblock is not an ext superblock".into()),
        },
        Err(err) => said(format!("its superblock cannot be read ({err})")),
    }
}

fn read_superblock(device: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(device)?;
    file.seek(SeekFrom::Start(SUPERBLOCK_AT))?;
    let mut block = vec![0; SUPERBLOCK_LEN];
    file.read_exact(&mut block)?;
    Ok(block)
}

/// Whether an ext superblock says its journal needs replaying; `None` when `block` is not one.
fn needs_recovery(block: &[u8]) -> Option<bool> {
    let magic = u16::from_le_bytes(block.get(MAGIC_AT..MAGIC_AT + 2)?.try_into().ok()?);
    if magic != MAGIC {
        return None;
    }
    let incompat = u32::from_le_bytes(block.get(INCOMPAT_AT..INCOMPAT_AT + 4)?.try_into().ok()?);
    Some(incompat & INCOMPAT_RECOVER != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(magic: u16, incompat: u32) -> Vec<u8> {
        let mut block = vec![0; SUPERBLOCK_LEN];
        block[MAGIC_AT..MAGIC_AT + 2].copy_from_slice(&magic.to_le_bytes());
        block[INCOMPAT_AT..INCOMPAT_AT + 4].copy_from_slice(&incompat.to_le_bytes());
        block
    }

    #[test]
    fn the_superblock_tells_a_journal_that_needs_replaying() {
        // extents | 64bit | flex_bg | filetype, as mkfs.ext4 leaves them, with and without RECOVER.
        assert_eq!(needs_recovery(&superblock(MAGIC, 0x2c2)), Some(false));
        assert_eq!(needs_recovery(&superblock(MAGIC, 0x2c2 | 0x4)), Some(true));
        assert_eq!(needs_recovery(&superblock(0x1234, 0x4)), None);
        assert_eq!(needs_recovery(&[0; 16]), None);
    }
}
