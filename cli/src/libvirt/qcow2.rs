//! What a qcow2 image's header says the image depends on besides itself: a backing file, and
//! an external data file (qcow2 v3, incompatible feature bit 2). Copying the image file alone
//! copies neither, so backups that copy image files refuse such disks.
//!
//! Only the header and its extensions (all inside the first cluster) are read; anything that
//! is not a qcow2 image has no dependencies.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Incompatible feature bit: guest data lives in an external data file.
const EXTERNAL_DATA_FILE: u64 = 1 << 2;
/// Header extension holding the external data file's name.
const EXT_DATA_FILE_NAME: u32 = 0x4441_5441;
/// Header extensions live in the first cluster, at most 2 MiB; names are at most this long.
const MAX_NAME: usize = 4096;
const MAX_EXTENSIONS: usize = 64;

/// Files outside a qcow2 image that hold part of the disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dependencies {
    /// The backing file named in the header.
    pub backing: Option<String>,
    /// The external data file: its name from the header extension, or `"(named by the
    /// hypervisor)"` when the feature bit is set without one.
    pub data_file: Option<String>,
}

/// The dependencies of the image at `path` (none for anything but qcow2). A header too short
/// or garbled to read is reported as a dependency named `?`, so callers refuse rather than
/// copy an image they do not understand.
pub fn dependencies(path: &Path) -> std::io::Result<Dependencies> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 104];
    let n = read_up_to(&mut file, &mut head)?;
    if n < 4 || head[..4] != *MAGIC {
        return Ok(Dependencies::default());
    }
    if n < 72 {
        return Ok(unreadable());
    }
    Ok(parse(&mut file, &head[..n]).unwrap_or_else(|_| unreadable()))
}

fn unreadable() -> Dependencies {
    Dependencies {
        backing: Some("?".to_owned()),
        data_file: None,
    }
}

fn parse(file: &mut File, head: &[u8]) -> std::io::Result<Dependencies> {
    let be32 = |at: usize| u32::from_be_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let be64 = |at: usize| u64::from_be_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    let version = be32(4);
    let mut deps = Dependencies::default();
    let backing_offset = be64(8);
    if backing_offset != 0 {
        let len = (be32(16) as usize).min(MAX_NAME);
        deps.backing = Some(read_name(file, backing_offset, len)?);
    }
    let (incompatible, header_len) = match version {
        2 => (0, 72),
        _ if head.len() >= 104 => (be64(72), u64::from(be32(100))),
        _ => return Err(std::io::ErrorKind::UnexpectedEof.into()),
    };
    if incompatible & EXTERNAL_DATA_FILE != 0 {
        deps.data_file = Some(
            data_file_name(file, header_len)?.unwrap_or_else(|| "(named by the hypervisor)".into()),
        );
    }
    Ok(deps)
}

/// The name in the external data file header extension, if the header has one.
fn data_file_name(file: &mut File, mut at: u64) -> std::io::Result<Option<String>> {
    for _ in 0..MAX_EXTENSIONS {
        let mut ext = [0u8; 8];
        file.seek(SeekFrom::Start(at))?;
        file.read_exact(&mut ext)?;
        let kind = u32::from_be_bytes(ext[..4].try_into().expect("4 bytes"));
        let len = u32::from_be_bytes(ext[4..].try_into().expect("4 bytes")) as usize;
        match kind {
            0 => return Ok(None),
            EXT_DATA_FILE_NAME => return read_name(file, at + 8, len.min(MAX_NAME)).map(Some),
            _ => at += 8 + len.next_multiple_of(8) as u64,
        }
    }
    Ok(None)
}

fn read_name(file: &mut File, at: u64, len: usize) -> std::io::Result<String> {
    let mut name = vec![0u8; len];
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(&mut name)?;
    Ok(String::from_utf8_lossy(&name).into_owned())
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A qcow2 v3 header (104 bytes) with `incompatible` features, then `extensions`, then
    /// `backing` (if any) named from the header.
    fn image(incompatible: u64, extensions: &[(u32, &[u8])], backing: Option<&str>) -> Vec<u8> {
        let mut out = vec![0u8; 104];
        out[..4].copy_from_slice(MAGIC);
        out[4..8].copy_from_slice(&3u32.to_be_bytes());
        out[72..80].copy_from_slice(&incompatible.to_be_bytes());
        out[100..104].copy_from_slice(&104u32.to_be_bytes());
        for (kind, data) in extensions {
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        out.extend_from_slice(&[0u8; 8]);
        if let Some(name) = backing {
            let at = out.len() as u64;
            out[8..16].copy_from_slice(&at.to_be_bytes());
            out[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        out
    }

    fn deps_of(bytes: &[u8]) -> Dependencies {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, bytes).unwrap();
        dependencies(&path).unwrap()
    }

    #[test]
    fn standalone_images_have_none() {
        assert_eq!(deps_of(&image(0, &[], None)), Dependencies::default());
        assert_eq!(deps_of(b"raw bytes"), Dependencies::default());
        assert_eq!(deps_of(b""), Dependencies::default());
        // An unrelated extension (feature name table) is skipped.
        let table = image(0, &[(0x6803_f857, &[1, 2, 3])], None);
        assert_eq!(deps_of(&table), Dependencies::default());
    }

    #[test]
    fn backing_file_and_data_file_are_named() {
        let deps = deps_of(&image(
            EXTERNAL_DATA_FILE,
            &[
                (0x6803_f857, &[9; 5]),
                (EXT_DATA_FILE_NAME, b"/vm/disk.data"),
            ],
            Some("/vm/base.raw"),
        ));
        assert_eq!(deps.backing.as_deref(), Some("/vm/base.raw"));
        assert_eq!(deps.data_file.as_deref(), Some("/vm/disk.data"));
    }

    #[test]
    fn data_file_bit_without_a_name_still_counts() {
        let deps = deps_of(&image(EXTERNAL_DATA_FILE, &[], None));
        assert_eq!(deps.data_file.as_deref(), Some("(named by the hypervisor)"));
        // The extension alone, without the feature bit, is not a dependency.
        let deps = deps_of(&image(0, &[(EXT_DATA_FILE_NAME, b"/x")], None));
        assert_eq!(deps.data_file, None);
    }

    #[test]
    fn truncated_headers_are_unreadable_not_standalone() {
        let full = image(EXTERNAL_DATA_FILE, &[(EXT_DATA_FILE_NAME, b"/d")], None);
        for len in [4, 40, 80, 110] {
            let deps = deps_of(&full[..len]);
            assert!(
                deps.backing.as_deref() == Some("?") || deps.data_file.is_some(),
                "{len} bytes: {deps:?}"
            );
        }
    }
}
