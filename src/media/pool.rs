//! Frame buffers that return to their pool when the last user drops them, so a camera
//! streaming at 30 fps does not allocate a new picture per frame: a [`RawFrame`] is shared by
//! reference (`Arc`) with every encoder queue and, once all are done with it, its buffer is
//! taken again by the capture loop.
//!
//! [`RawFrame`]: crate::media::RawFrame

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A bounded stack of spare buffers.
#[derive(Debug)]
pub struct BufferPool {
    spare: Mutex<Vec<Vec<u8>>>,
    /// Most spare buffers kept; more are freed.
    max_spare: usize,
    allocations: AtomicU64,
}

impl BufferPool {
    /// A pool keeping at most `max_spare` unused buffers.
    pub fn new(max_spare: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            spare: Mutex::new(Vec::with_capacity(max_spare)),
            max_spare,
            allocations: AtomicU64::new(0),
        })
    }

    /// A buffer of exactly `len` bytes (contents unspecified: the caller overwrites them),
    /// reused when one is spare.
    pub fn take(self: &Arc<Self>, len: usize) -> FrameBuffer {
        let reused = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let data = match reused {
            Some(mut v) => {
                if v.capacity() < len {
                    self.allocations.fetch_add(1, Ordering::Relaxed);
                }
                v.resize(len, 0);
                v
            }
            None => {
                self.allocations.fetch_add(1, Ordering::Relaxed);
                vec![0; len]
            }
        };
        FrameBuffer {
            data,
            pool: Some(self.clone()),
        }
    }

    /// Buffers allocated (or grown) so far; flat in steady state.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }

    fn give_back(&self, data: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < self.max_spare {
            spare.push(data);
        }
    }
}

/// Picture bytes, owned; returned to their [`BufferPool`] (if any) on drop.
pub struct FrameBuffer {
    data: Vec<u8>,
    pool: Option<Arc<BufferPool>>,
}

impl From<Vec<u8>> for FrameBuffer {
    /// A buffer outside any pool (test pattern, tests).
    fn from(data: Vec<u8>) -> Self {
        FrameBuffer { data, pool: None }
    }
}

impl Deref for FrameBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl DerefMut for FrameBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Clone for FrameBuffer {
    /// A copy outside the pool.
    fn clone(&self) -> Self {
        FrameBuffer::from(self.data.clone())
    }
}

impl std::fmt::Debug for FrameBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FrameBuffer({} bytes, pooled: {})",
            self.data.len(),
            self.pool.is_some()
        )
    }
}

impl Drop for FrameBuffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(std::mem::take(&mut self.data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_once_dropped() {
        let pool = BufferPool::new(2);
        for _ in 0..100 {
            let mut a = pool.take(1000);
            a[0] = 1;
            let b = pool.take(1000);
            assert_eq!((a.len(), b.len()), (1000, 1000));
        }
        assert_eq!(pool.allocations(), 2, "two live at once, then only reuse");
        // A larger size grows a spare buffer once.
        drop(pool.take(2000));
        assert_eq!(pool.allocations(), 3);
        // Beyond max_spare, returned buffers are freed.
        let held: Vec<FrameBuffer> = (0..5).map(|_| pool.take(10)).collect();
        drop(held);
        assert_eq!(pool.spare.lock().expect("lock").len(), 2);
    }

    #[test]
    fn plain_buffers_and_clones_stay_outside() {
        let pool = BufferPool::new(2);
        let a = pool.take(4);
        let b = a.clone();
        drop(b);
        assert!(pool.spare.lock().expect("lock").is_empty());
        drop(a);
        assert_eq!(pool.spare.lock().expect("lock").len(), 1);
        let plain = FrameBuffer::from(vec![1, 2, 3]);
        assert_eq!(&*plain, &[1, 2, 3]);
    }
}
