//! Page-aligned buffers (as O_DIRECT requires) and the fixed pool that bounds the reader's
//! memory: the pipeline never holds more read buffers than the pool was created with.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};
use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous, munmap};

/// Alignment of every buffer: 4096 satisfies O_DIRECT on any logical block size up to 4 KiB.
pub const BUFFER_ALIGN: usize = 4096;

/// A page-aligned, zero-initialised buffer from an anonymous private mapping. The kernel
/// supplies zero pages lazily, so a buffer costs memory only for the pages actually written.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf uniquely owns its mapping (like Box<[u8]>); no shared interior state.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Maps `capacity` bytes (rounded up to the alignment; at least one page).
    pub fn new(capacity: usize) -> AlignedBuf {
        let len = capacity.max(1).next_multiple_of(BUFFER_ALIGN);
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing aliases
        // nothing; it is readable, writable and zero-filled.
        let mapped = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        };
        let ptr = mapped
            .ok()
            .and_then(|p| NonNull::new(p.cast::<u8>()))
            .unwrap_or_else(|| {
                std::alloc::handle_alloc_error(
                    std::alloc::Layout::from_size_align(len, BUFFER_ALIGN).expect("layout"),
                )
            });
        AlignedBuf { ptr, len }
    }

    pub fn capacity(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is valid for `len` initialised (zero-filled) bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer for the kernel to write into (io_uring). The caller must keep `self` alive
    /// and unaliased until the kernel has completed the operation.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with exactly this address and length and
        // no slice of it outlives self.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// At most `count` buffers, created on first need (a small image never maps the whole pool).
/// Taking one when all exist blocks until a consumer drops a [`PooledBuf`].
pub struct BufferPool {
    free: Receiver<AlignedBuf>,
    home: Sender<AlignedBuf>,
    size: usize,
    count: usize,
    created: AtomicUsize,
}

impl BufferPool {
    /// Up to `count` buffers of `size` bytes each.
    pub fn new(count: usize, size: usize) -> BufferPool {
        let (home, free) = crossbeam_channel::unbounded();
        BufferPool {
            free,
            home,
            size,
            count: count.max(1),
            created: AtomicUsize::new(0),
        }
    }

    /// A new buffer if the pool may still grow.
    fn grow(&self) -> Option<PooledBuf> {
        self.created
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.count).then_some(n + 1)
            })
            .ok()
            .map(|_| self.wrap(AlignedBuf::new(self.size)))
    }

    /// Waits for a free buffer, or returns `None` once `cancel` is disconnected (the pipeline
    /// is shutting down and the buffers held downstream may never come back).
    pub fn take(&self, cancel: &Receiver<()>) -> Option<PooledBuf> {
        if let Some(buf) = self.try_take() {
            return Some(buf);
        }
        crossbeam_channel::select! {
            recv(self.free) -> buf => Some(self.wrap(buf.expect("pool holds its own sender"))),
            recv(cancel) -> _ => None,
        }
    }

    /// A free buffer if one is available now.
    pub fn try_take(&self) -> Option<PooledBuf> {
        match self.free.try_recv() {
            Ok(buf) => Some(self.wrap(buf)),
            Err(_) => self.grow(),
        }
    }

    fn wrap(&self, buf: AlignedBuf) -> PooledBuf {
        PooledBuf {
            buf: Some(buf),
            len: 0,
            home: self.home.clone(),
        }
    }
}

/// A buffer on loan from a [`BufferPool`]; dropping it returns it. Derefs to its first `len`
/// bytes (the valid data).
pub struct PooledBuf {
    buf: Option<AlignedBuf>,
    len: usize,
    home: Sender<AlignedBuf>,
}

impl PooledBuf {
    pub fn buf_mut(&mut self) -> &mut AlignedBuf {
        self.buf.as_mut().expect("present until drop")
    }

    /// Marks the first `len` bytes as valid data.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.buf.as_ref().expect("present until drop").capacity());
        self.len = len;
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf.as_ref().expect("present until drop").as_slice()[..self.len]
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // The pool may be gone at shutdown; then the buffer is simply freed.
            let _ = self.home.send(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_recycled() {
        let pool = BufferPool::new(2, 10_000);
        let (cancel_tx, cancel) = crossbeam_channel::bounded::<()>(0);
        let mut a = pool.take(&cancel).unwrap();
        assert_eq!(a.buf_mut().as_mut_ptr() as usize % BUFFER_ALIGN, 0);
        assert_eq!(a.buf_mut().capacity(), 12288);
        let _b = pool.take(&cancel).unwrap();
        assert!(pool.try_take().is_none());
        drop(a);
        let _c = pool.try_take().expect("a returned buffer is reused");
        drop(cancel_tx);
        assert!(
            pool.take(&cancel).is_none(),
            "cancel unblocks an empty pool"
        );
    }
}
