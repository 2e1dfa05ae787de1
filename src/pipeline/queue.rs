//! A bounded queue between threads that never blocks the producer: when full, the oldest
//! item is dropped (and counted). Used between capture and encoders, where a fresh frame is
//! worth more than a complete history.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Bounded, drop-oldest, multi-producer queue with a blocking consumer.
pub struct DropOldest<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> DropOldest<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DropOldest {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an item, dropping the oldest if full. Returns false (and drops `item`) once closed.
    pub fn push(&self, item: T) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        if inner.items.len() == self.capacity {
            inner.items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        inner.items.push_back(item);
        drop(inner);
        self.ready.notify_one();
        true
    }

    /// Takes the oldest item, waiting up to `timeout`. `None` on timeout, or when closed and empty.
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        let inner = self.lock();
        let (mut inner, _) = self
            .ready
            .wait_timeout_while(inner, timeout, |i| i.items.is_empty() && !i.closed)
            .unwrap_or_else(|e| e.into_inner());
        inner.items.pop_front()
    }

    /// Closes the queue: pushes are refused, waiting consumers wake up.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Whether [`DropOldest::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Items dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether no item is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let q = DropOldest::new(2);
        for i in 0..5 {
            assert!(q.push(i));
        }
        assert_eq!(q.dropped(), 3);
        assert_eq!(q.pop_timeout(Duration::ZERO), Some(3));
        assert_eq!(q.pop_timeout(Duration::ZERO), Some(4));
        assert_eq!(q.pop_timeout(Duration::from_millis(5)), None);
    }

    #[test]
    fn close_wakes_a_waiting_consumer_and_refuses_pushes() {
        let q = Arc::new(DropOldest::<u32>::new(2));
        let q2 = q.clone();
        let start = Instant::now();
        let consumer = std::thread::spawn(move || q2.pop_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        assert_eq!(consumer.join().ok().flatten(), None);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(!q.push(1));
        assert!(q.is_closed());
    }

    #[test]
    fn items_queued_before_close_are_drained_then_none() {
        let q = DropOldest::new(2);
        q.push("a");
        q.push("b");
        q.close();
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_timeout(Duration::from_secs(5)), Some("a"));
        assert_eq!(q.pop_timeout(Duration::from_secs(5)), Some("b"));
        let start = Instant::now();
        assert_eq!(q.pop_timeout(Duration::from_secs(5)), None);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "closed: no waiting"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn consumer_receives_items_pushed_from_another_thread() {
        let q = Arc::new(DropOldest::new(4));
        let q2 = q.clone();
        let producer = std::thread::spawn(move || {
            for i in 0..3 {
                q2.push(i);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            if let Some(i) = q.pop_timeout(Duration::from_secs(1)) {
                got.push(i);
            }
        }
        producer.join().ok();
        assert_eq!(got, vec![0, 1, 2]);
        assert_eq!(q.dropped(), 0);
    }
}
