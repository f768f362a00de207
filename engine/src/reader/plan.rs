//! The chunk plan: which chunks of an image hold data and which lie wholly in holes.
//!
//! Holes are found with `SEEK_DATA`/`SEEK_HOLE`, one pair of seeks per data extent, so a
//! 64 GiB sparse image with little data is planned in a handful of system calls and its holes
//! are never read. Where the filesystem or device cannot answer (block devices, some network
//! filesystems), every chunk is planned as data.

use std::fs::File;
use std::io;

use rustix::fs::{SeekFrom, seek};
use rustix::io::Errno;

/// One chunk to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedChunk {
    pub index: u64,
    pub offset: u64,
    pub len: usize,
    /// The whole chunk lies in a hole: it reads as zeros without being read.
    pub hole: bool,
}

/// Iterator over every chunk of an image, in order.
pub struct ChunkPlan<'a> {
    file: &'a File,
    size: u64,
    chunk_size: u64,
    next_index: u64,
    /// Current data extent `[start, end)`, or `None` when past the last one.
    extent: Option<(u64, u64)>,
    /// Whether `extent` needs looking up for the next chunk.
    stale: bool,
    holes_known: bool,
}

impl<'a> ChunkPlan<'a> {
    /// Plans `file` of `size` bytes in chunks of `chunk_size`. `detect_holes = false` treats the
    /// whole image as data (block devices).
    pub fn new(file: &'a File, size: u64, chunk_size: u32, detect_holes: bool) -> ChunkPlan<'a> {
        ChunkPlan {
            file,
            size,
            chunk_size: u64::from(chunk_size),
            next_index: 0,
            extent: None,
            stale: true,
            holes_known: detect_holes,
        }
    }

    pub fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    /// Finds the first data extent ending after `pos`.
    fn find_extent(&mut self, pos: u64) -> io::Result<()> {
        match seek(self.file, SeekFrom::Data(pos)) {
            Ok(start) => {
                let end = seek(self.file, SeekFrom::Hole(start)).map_err(io::Error::from)?;
                self.extent = Some((start, end.max(start + 1)));
            }
            Err(Errno::NXIO) => self.extent = None,
            Err(Errno::INVAL | Errno::OPNOTSUPP) => {
                log::debug!("SEEK_DATA unsupported; reading every chunk");
                self.holes_known = false;
            }
            Err(e) => return Err(e.into()),
        }
        self.stale = false;
        Ok(())
    }

    fn is_hole(&mut self, start: u64, end: u64) -> io::Result<bool> {
        if !self.holes_known {
            return Ok(false);
        }
        if self.stale || self.extent.is_some_and(|(_, e)| e <= start) {
            self.find_extent(start)?;
            if !self.holes_known {
                return Ok(false);
            }
        }
        Ok(match self.extent {
            None => true,
            Some((s, _)) => s >= end,
        })
    }
}

impl Iterator for ChunkPlan<'_> {
    type Item = io::Result<PlannedChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.next_index.checked_mul(self.chunk_size)?;
        if offset >= self.size {
            return None;
        }
        let end = (offset + self.chunk_size).min(self.size);
        let chunk = self.is_hole(offset, end).map(|hole| PlannedChunk {
            index: self.next_index,
            offset,
            len: (end - offset) as usize,
            hole,
        });
        self.next_index += 1;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_are_planned_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse.img");
        let file = File::create(&path).unwrap();
        let cs = 1u64 << 20;
        file.set_len(10 * cs + 5).unwrap();
        file.write_all_at(b"x", 3 * cs + 7).unwrap();
        file.write_all_at(b"y", 10 * cs + 1).unwrap();
        let file = File::open(&path).unwrap();
        let plan: Vec<_> = ChunkPlan::new(&file, 10 * cs + 5, 1 << 20, true)
            .map(Result::unwrap)
            .collect();
        assert_eq!(plan.len(), 11);
        assert_eq!(plan[10].len, 5);
        // Filesystems may round extents to their block size, never beyond a 1 MiB chunk.
        let data: Vec<u64> = plan.iter().filter(|c| !c.hole).map(|c| c.index).collect();
        assert_eq!(data, vec![3, 10]);
        let all_data = ChunkPlan::new(&file, 10 * cs + 5, 1 << 20, false)
            .map(Result::unwrap)
            .all(|c| !c.hole);
        assert!(all_data);
    }

    #[test]
    fn empty_image_has_no_chunks() {
        let file = tempfile::tempfile().unwrap();
        assert_eq!(ChunkPlan::new(&file, 0, 1 << 20, true).count(), 0);
    }
}
