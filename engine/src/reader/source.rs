//! Opening an image for reading.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::error::EngineError;
use crate::reader::say_once;

/// An image opened for reading: a regular file or a block device.
pub struct ImageSource {
    pub path: PathBuf,
    /// Page-cache descriptor: used for hole detection and as the fallback for reads.
    pub buffered: File,
    /// O_DIRECT descriptor, when the filesystem accepts it. Reads through it bypass the host's
    /// page cache, so a backup does not evict the guests' cached data.
    pub direct: Option<File>,
    pub size: u64,
    pub is_block_device: bool,
}

static DIRECT_REFUSED: AtomicBool = AtomicBool::new(false);

impl ImageSource {
    /// Opens `path`; `try_direct` asks for an O_DIRECT descriptor as well.
    pub fn open(path: &Path, try_direct: bool) -> Result<ImageSource, EngineError> {
        let open_err = |source| EngineError::ImageOpen {
            path: path.to_owned(),
            source,
        };
        // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below);
        // regular files and block devices ignore the flag.
        let mut buffered = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(open_err)?;
        let file_type = buffered.metadata().map_err(open_err)?.file_type();
        let is_block_device = file_type.is_block_device();
        if !file_type.is_file() && !is_block_device {
            return Err(open_err(std::io::Error::other(
                "not a regular file or block device",
            )));
        }
        let size = buffered.seek(SeekFrom::End(0)).map_err(open_err)?;
        buffered.seek(SeekFrom::Start(0)).map_err(open_err)?;
        let direct = if try_direct {
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
            {
                Ok(file) => Some(file),
                Err(e) => {
                    say_once(
                        &DIRECT_REFUSED,
                        &format!(
                            "O_DIRECT refused for {} ({e}); reading through the page cache",
                            path.display()
                        ),
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(ImageSource {
            path: path.to_owned(),
            buffered,
            direct,
            size,
            is_block_device,
        })
    }

    pub(crate) fn read_error(&self, offset: u64, source: std::io::Error) -> EngineError {
        EngineError::ImageRead {
            path: self.path.clone(),
            offset,
            source,
        }
    }

    pub(crate) fn shrank(&self, offset: u64) -> EngineError {
        EngineError::ImageShrank {
            path: self.path.clone(),
            offset,
            size: self.size,
        }
    }
}
