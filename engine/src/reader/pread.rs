//! Fallback reader: one positioned read at a time.

use std::os::unix::fs::FileExt;

use crate::reader::{BufferPool, ChunkPlan, ImageSource, ReadChunk, ReaderOptions, ReaderOutput};

/// Reads every chunk in order. O_DIRECT is used when open and the read is aligned.
pub fn run(
    source: &ImageSource,
    options: &ReaderOptions,
    pool: &BufferPool,
    output: &ReaderOutput<'_>,
) {
    let out = output.chunks;
    let plan = ChunkPlan::new(
        &source.buffered,
        source.size,
        options.chunk_size,
        !source.is_block_device,
    );
    for planned in plan {
        let planned = match planned {
            Ok(p) => p,
            Err(e) => {
                let _ = out.send(Err(source.read_error(0, e)));
                return;
            }
        };
        let data = if planned.hole {
            None
        } else {
            let Some(mut buf) = pool.take(output.cancel) else {
                return;
            };
            if let Err(e) = read_full(source, &mut buf, planned.offset, planned.len) {
                let _ = out.send(Err(e));
                return;
            }
            Some(buf)
        };
        let chunk = ReadChunk {
            index: planned.index,
            offset: planned.offset,
            len: planned.len,
            data,
        };
        if out.send(Ok(chunk)).is_err() {
            return;
        }
    }
}

/// Fills `buf` with `len` bytes from `offset`, through O_DIRECT when possible.
fn read_full(
    source: &ImageSource,
    buf: &mut crate::reader::PooledBuf,
    offset: u64,
    len: usize,
) -> Result<(), crate::error::EngineError> {
    let aligned_len = len.next_multiple_of(crate::reader::aligned::BUFFER_ALIGN);
    let slice = buf.buf_mut().as_mut_slice();
    let mut done = 0usize;
    if let Some(direct) = &source.direct {
        // One aligned read; a short result (end of file) is completed below if needed.
        match direct.read_at(&mut slice[..aligned_len], offset) {
            Ok(n) => done = n.min(len),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(source.read_error(offset, e)),
        }
    }
    while done < len {
        match source
            .buffered
            .read_at(&mut slice[done..len], offset + done as u64)
        {
            Ok(0) => return Err(source.shrank(offset + done as u64)),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(source.read_error(offset + done as u64, e)),
        }
    }
    buf.set_len(len);
    Ok(())
}
