//! The fast reader: io_uring with up to `queue_depth` reads in flight.
//!
//! Reads go through the O_DIRECT descriptor when there is one. A read the kernel refuses with
//! EINVAL there (an alignment the device does not accept) and any short read are finished
//! through the page-cache descriptor, so odd sizes and filesystems never fail a backup.
//!
//! Safety: the kernel writes into a buffer from submission until its completion is reaped.
//! Each in-flight buffer is owned by its slot in `in_flight` and is only released after its
//! completion arrives; on every exit path the reader first reaps all outstanding completions.

use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;

use io_uring::{IoUring, opcode, types};

use crate::error::EngineError;
use crate::reader::aligned::BUFFER_ALIGN;
use crate::reader::{
    BufferPool, ChunkPlan, ImageSource, PlannedChunk, PooledBuf, ReadChunk, ReaderOptions,
    ReaderOutput, say_once,
};

static DIRECT_READ_REFUSED: AtomicBool = AtomicBool::new(false);

/// A probed io_uring instance.
pub struct UringReader {
    ring: IoUring,
    depth: usize,
}

/// Whether the reader goes on after a completion.
enum Flow {
    Continue,
    /// The consumer hung up.
    Stop,
}

struct InFlight {
    chunk: PlannedChunk,
    buf: PooledBuf,
    /// Bytes of the chunk read so far.
    done: usize,
    /// Whether the read in flight goes through the O_DIRECT descriptor.
    direct: bool,
}

impl UringReader {
    /// Sets up a ring; fails where the kernel or a seccomp policy refuses io_uring.
    pub fn new(queue_depth: usize) -> std::io::Result<UringReader> {
        let depth = queue_depth.clamp(1, 256);
        let ring = IoUring::new(depth.next_power_of_two() as u32)?;
        Ok(UringReader { ring, depth })
    }

    /// Reads every chunk of `source`; errors are sent on `out`.
    pub fn run(
        mut self,
        source: &ImageSource,
        options: &ReaderOptions,
        pool: &BufferPool,
        out: &ReaderOutput<'_>,
    ) {
        let mut slots: Vec<Option<InFlight>> = (0..self.depth).map(|_| None).collect();
        // Even a panic must not free buffers the kernel may still write: drain, then unwind.
        let pumped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.pump(source, options, pool, out, &mut slots)
        }));
        self.drain(&mut slots);
        match pumped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = out.chunks.send(Err(e));
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `submit_and_wait(1)`, retried when a signal interrupts the wait.
    fn wait_one(&mut self) -> std::io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other.map(drop),
            }
        }
    }

    fn pump(
        &mut self,
        source: &ImageSource,
        options: &ReaderOptions,
        pool: &BufferPool,
        output: &ReaderOutput<'_>,
        slots: &mut [Option<InFlight>],
    ) -> Result<(), EngineError> {
        let out = output.chunks;
        let mut plan = ChunkPlan::new(
            &source.buffered,
            source.size,
            options.chunk_size,
            !source.is_block_device,
        );
        let mut waiting: Option<PlannedChunk> = None;
        let mut plan_done = false;
        let mut use_direct = source.direct.is_some();
        loop {
            // Fill free slots.
            while let Some(slot) = slots.iter().position(Option::is_none) {
                let chunk = match waiting.take() {
                    Some(c) => c,
                    None => match plan.next() {
                        Some(c) => c.map_err(|e| source.read_error(0, e))?,
                        None => {
                            plan_done = true;
                            break;
                        }
                    },
                };
                if chunk.hole {
                    let hole = ReadChunk {
                        index: chunk.index,
                        offset: chunk.offset,
                        len: chunk.len,
                        data: None,
                    };
                    if out.send(Ok(hole)).is_err() {
                        return Ok(());
                    }
                    continue;
                }
                let idle = slots.iter().all(Option::is_none);
                let buf = if idle {
                    match pool.take(output.cancel) {
                        Some(buf) => buf,
                        None => return Ok(()),
                    }
                } else if let Some(buf) = pool.try_take() {
                    buf
                } else {
                    waiting = Some(chunk);
                    break;
                };
                slots[slot] = Some(InFlight {
                    chunk,
                    buf,
                    done: 0,
                    direct: false,
                });
                if let Err(e) = self.submit(source, slot, slots, use_direct) {
                    slots[slot] = None; // never queued
                    return Err(e);
                }
            }
            if slots.iter().all(Option::is_none) {
                if plan_done && waiting.is_none() {
                    return Ok(());
                }
                continue;
            }
            self.wait_one().map_err(|e| source.read_error(0, e))?;
            let completions: Vec<(usize, i32)> = self
                .ring
                .completion()
                .map(|cqe| (cqe.user_data() as usize, cqe.result()))
                .collect();
            let mut reaped = completions.into_iter();
            while let Some((slot, result)) = reaped.next() {
                let flow = self.complete(source, slot, result, slots, out, &mut use_direct);
                if !matches!(flow, Ok(Flow::Continue)) {
                    // These completions were reaped: the kernel is done with their buffers,
                    // and no new read was queued for them, so `drain` must not wait for them.
                    slots[slot] = None;
                    for (slot, _) in reaped {
                        slots[slot] = None;
                    }
                    return flow.map(|_| ());
                }
            }
        }
    }

    /// Handles one completion: resubmits, finishes the chunk, or fails.
    fn complete(
        &mut self,
        source: &ImageSource,
        slot: usize,
        result: i32,
        slots: &mut [Option<InFlight>],
        out: &crossbeam_channel::Sender<crate::reader::ReadResult>,
        use_direct: &mut bool,
    ) -> Result<Flow, EngineError> {
        let was_direct = slots[slot].as_ref().is_some_and(|f| f.direct);
        if result == -libc::EINVAL && was_direct {
            say_once(
                &DIRECT_READ_REFUSED,
                &format!(
                    "O_DIRECT reads refused for {}; reading through the page cache",
                    source.path.display()
                ),
            );
            *use_direct = false;
            self.submit(source, slot, slots, false)?;
            return Ok(Flow::Continue);
        }
        if result == -libc::EINTR || result == -libc::EAGAIN {
            self.submit(source, slot, slots, was_direct)?;
            return Ok(Flow::Continue);
        }
        let flight = slots[slot].as_mut().expect("completion for a live slot");
        match result {
            r if r < 0 => {
                let offset = flight.chunk.offset + flight.done as u64;
                return Err(source.read_error(offset, std::io::Error::from_raw_os_error(-r)));
            }
            0 => {
                let offset = flight.chunk.offset + flight.done as u64;
                return Err(source.shrank(offset));
            }
            n => flight.done += n as usize,
        }
        if flight.done < flight.chunk.len {
            // Partial read: finish through the page cache (alignment may be lost).
            self.submit(source, slot, slots, false)?;
            return Ok(Flow::Continue);
        }
        let mut flight = slots[slot].take().expect("slot is live");
        flight.buf.set_len(flight.chunk.len);
        let chunk = ReadChunk {
            index: flight.chunk.index,
            offset: flight.chunk.offset,
            len: flight.chunk.len,
            data: Some(flight.buf),
        };
        Ok(if out.send(Ok(chunk)).is_ok() {
            Flow::Continue
        } else {
            Flow::Stop
        })
    }

    /// Queues the read of the rest of the chunk in `slot`.
    fn submit(
        &mut self,
        source: &ImageSource,
        slot: usize,
        slots: &mut [Option<InFlight>],
        direct: bool,
    ) -> Result<(), EngineError> {
        let flight = slots[slot].as_mut().expect("submit a live slot");
        let (fd, len) = match (&source.direct, direct && flight.done == 0) {
            (Some(file), true) => (
                file.as_raw_fd(),
                flight.chunk.len.next_multiple_of(BUFFER_ALIGN),
            ),
            _ => (source.buffered.as_raw_fd(), flight.chunk.len - flight.done),
        };
        flight.direct = direct && flight.done == 0 && source.direct.is_some();
        let capacity = flight.buf.buf_mut().capacity();
        debug_assert!(flight.done + len <= capacity);
        // SAFETY: the pointer stays inside the slot's buffer (done + len <= capacity), and the
        // buffer stays owned by the slot until this read's completion is reaped.
        let ptr = unsafe { flight.buf.buf_mut().as_mut_ptr().add(flight.done) };
        let entry = opcode::Read::new(types::Fd(fd), ptr, len as u32)
            .offset(flight.chunk.offset + flight.done as u64)
            .build()
            .user_data(slot as u64);
        // SAFETY: the entry refers to memory that outlives the operation (see above).
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // The queue holds `depth` entries and at most `depth` reads are in flight, so it
            // cannot be full; submit and retry once to be certain.
            self.ring
                .submit()
                .map_err(|e| source.read_error(flight.chunk.offset, e))?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&entry) }.map_err(|_| {
                source.read_error(
                    flight.chunk.offset,
                    std::io::Error::other("io_uring submission queue full"),
                )
            })?;
        }
        Ok(())
    }

    /// Waits for every outstanding read so no buffer is freed while the kernel may write it.
    fn drain(&mut self, slots: &mut [Option<InFlight>]) {
        while slots.iter().any(Option::is_some) {
            if self.wait_one().is_err() {
                // Cannot wait: leak the buffers rather than free memory the kernel may write.
                for slot in slots.iter_mut() {
                    if let Some(flight) = slot.take() {
                        std::mem::forget(flight.buf);
                    }
                }
                return;
            }
            let done: Vec<usize> = self
                .ring
                .completion()
                .map(|cqe| cqe.user_data() as usize)
                .collect();
            for slot in done {
                slots[slot] = None;
            }
        }
    }
}
