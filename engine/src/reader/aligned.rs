//! Page-aligned buffers (as O_DIRECT requires) and the fixed pool that bounds the reader's
//! memory: the pipeline never holds more read buffers than the pool was created with.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ops::Deref;
use std::ptr::NonNull;

use crossbeam_channel::{Receiver, Sender};

/// Alignment of every buffer: 4096 satisfies O_DIRECT on any logical block size up to 4 KiB.
pub const BUFFER_ALIGN: usize = 4096;

/// A heap buffer aligned to [`BUFFER_ALIGN`], zero-initialised.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: AlignedBuf uniquely owns its allocation (like Box<[u8]>); no shared interior state.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only give out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `capacity` bytes (rounded up to the alignment; at least one block).
    pub fn new(capacity: usize) -> AlignedBuf {
        let size = capacity.max(1).next_multiple_of(BUFFER_ALIGN);
        let layout = Layout::from_size_align(size, BUFFER_ALIGN).expect("valid buffer layout");
        // SAFETY: layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, layout }
    }

    pub fn capacity(&self) -> usize {
        self.layout.size()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for layout.size() initialised bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// Raw pointer for the kernel to write into (io_uring). The caller must keep `self` alive
    /// and unaliased until the kernel has completed the operation.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// A fixed set of buffers. Taking one blocks until a consumer drops a [`PooledBuf`].
pub struct BufferPool {
    free: Receiver<AlignedBuf>,
    home: Sender<AlignedBuf>,
}

impl BufferPool {
    /// `count` buffers of `size` bytes each.
    pub fn new(count: usize, size: usize) -> BufferPool {
        let (home, free) = crossbeam_channel::unbounded();
        for _ in 0..count {
            home.send(AlignedBuf::new(size))
                .expect("pool receiver alive");
        }
        BufferPool { free, home }
    }

    /// Waits for a free buffer, or returns `None` once `cancel` is disconnected (the pipeline
    /// is shutting down and the buffers held downstream may never come back).
    pub fn take(&self, cancel: &Receiver<()>) -> Option<PooledBuf> {
        crossbeam_channel::select! {
            recv(self.free) -> buf => Some(self.wrap(buf.expect("pool holds its own sender"))),
            recv(cancel) -> _ => None,
        }
    }

    /// A free buffer if one is available now.
    pub fn try_take(&self) -> Option<PooledBuf> {
        self.free.try_recv().ok().map(|buf| self.wrap(buf))
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
        assert!(pool.try_take().is_some());
        drop(cancel_tx);
        assert!(
            pool.take(&cancel).is_none(),
            "cancel unblocks an empty pool"
        );
    }
}
