//! Small synchronisation pieces for the per-request path, where a mutex per clone, drop or
//! release (as `tokio_util`'s `CancellationToken` and tokio's `Semaphore` take) costs more
//! than the work they guard: a cancellation signal, counted slots and a byte budget, each a
//! few atomic operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A call's cancellation: set once, seen by every clone. Cloning and dropping are one atomic
/// operation each.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// A signal not yet cancelled.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels: every waiter wakes, and every later check sees it.
    pub fn cancel(&self) {
        if !self.0.cancelled.swap(true, Ordering::AcqRel) {
            self.0.notify.notify_waiters();
        }
    }

    /// Whether [`cancel`](Cancel::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire)
    }

    /// Completes once cancelled.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Cancels when dropped, unless disarmed.
    pub(crate) fn drop_guard(self) -> CancelOnDrop {
        CancelOnDrop(Some(self))
    }
}

/// Cancels its signal when dropped, unless [`disarm`](CancelOnDrop::disarm)ed.
pub(crate) struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = &self.0 {
            cancel.cancel();
        }
    }
}

/// A fixed number of slots (calls in flight), taken without waiting.
#[derive(Debug)]
pub(crate) struct Slots {
    used: AtomicUsize,
    max: usize,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot, if one is free; it is given back when the guard drops.
    pub(crate) fn try_take(self: &Arc<Slots>) -> Option<Slot> {
        if self.used.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.used.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }
}

/// One taken slot.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A budget of bytes shared by many holders, taken without waiting or, for who can wait,
/// waited for.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    max: usize,
    /// Holders waiting in [`take`](Budget::take): only then does a release notify.
    waiting: AtomicUsize,
    freed: Notify,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            max,
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// `n` bytes, if the budget has them.
    pub(crate) fn try_take(self: &Arc<Budget>, n: usize) -> Option<Bytes> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let next = used.checked_add(n).filter(|&next| next <= self.max)?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Some(Bytes {
                        budget: self.clone(),
                        n,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// `n` bytes whether or not the budget has them: for memory that exists already (a decoded
    /// request, a finished reply) and must be counted, so that what is taken next waits.
    pub(crate) fn charge(self: &Arc<Budget>, n: usize) -> Bytes {
        self.used.fetch_add(n, Ordering::AcqRel);
        Bytes {
            budget: self.clone(),
            n,
        }
    }

    /// `n` bytes, waiting for holders to give them back.
    pub(crate) async fn take(self: &Arc<Budget>, n: usize) -> Bytes {
        if let Some(bytes) = self.try_take(n) {
            return bytes;
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        loop {
            let freed = self.freed.notified();
            if let Some(bytes) = self.try_take(n) {
                return bytes;
            }
            freed.await;
        }
    }
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Bytes {
    budget: Arc<Budget>,
    n: usize,
}

impl Bytes {
    /// How many bytes this holds.
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// Adds `other`'s bytes to these.
    pub(crate) fn merge(&mut self, mut other: Bytes) {
        self.n += std::mem::take(&mut other.n);
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        if self.n > 0 {
            self.budget.used.fetch_sub(self.n, Ordering::AcqRel);
            if self.budget.waiting.load(Ordering::Acquire) > 0 {
                self.budget.freed.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_budgets_give_back_what_their_guards_held() {
        let slots = Slots::new(2);
        let a = slots.try_take().unwrap();
        let _b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(a);
        assert!(slots.try_take().is_some());

        let budget = Budget::new(100);
        let mut x = budget.try_take(60).unwrap();
        assert!(budget.try_take(50).is_none());
        let y = budget.try_take(40).unwrap();
        x.merge(y);
        assert_eq!(x.len(), 100);
        assert!(budget.try_take(1).is_none());
        drop(x);
        assert!(budget.try_take(100).is_some());
    }

    #[tokio::test]
    async fn a_cancel_wakes_every_clone() {
        let cancel = Cancel::new();
        let waiter = tokio::spawn({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!cancel.is_cancelled());
        drop(cancel.clone().drop_guard());
        waiter.await.unwrap();
        assert!(cancel.is_cancelled());
    }
}
