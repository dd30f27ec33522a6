//! Small synchronisation pieces for the per-request path, where a mutex per clone, drop or
//! release (as `tokio_util`'s `CancellationToken` and tokio's `Semaphore` take) costs more
//! than the work they guard: a cancellation signal, counted slots and a byte budget, each a
//! few atomic operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A call's cancellation: set once, seen by every clone. Cloning and dropping are one atomic
/// operation each.
///
/// A request's context and every copy of it share one, which makes it the place for the
/// other thing the request's downstream calls tell the server: that one of them was refused
/// after its own retries (`Cancel::note_downstream_refused`).
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    notify: Notify,
    downstream_refused: AtomicBool,
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

    /// Records that a call made while serving this request was refused or found no server
    /// (after the retries its channel allowed): the request's own failure then says not to
    /// retry it, so that only the level right above a failure retries.
    pub(crate) fn note_downstream_refused(&self) {
        self.0.downstream_refused.store(true, Ordering::Relaxed);
    }

    /// Whether [`note_downstream_refused`](Cancel::note_downstream_refused) was called.
    pub(crate) fn downstream_refused(&self) -> bool {
        self.0.downstream_refused.load(Ordering::Relaxed)
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
        self.try_take_beside(0)
    }

    /// A slot for a holder that has `held` of them (with this one), kept as [`Budget`] keeps
    /// its bytes: within the last eighth of the slots, a holder may have at most a
    /// sixty-fourth of those left, so that connections that fill the server with calls leave
    /// room for one that has few.
    pub(crate) fn try_take_beside(self: &Arc<Slots>, held: usize) -> Option<Slot> {
        let used = self.used.fetch_add(1, Ordering::AcqRel);
        let left = self.max.saturating_sub(used);
        if left == 0
            || (used >= self.max - self.max / Budget::RESERVE
                && held.saturating_mul(Budget::SHARE_OF_REST) > left)
        {
            self.used.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }

    /// How many are taken.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
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
///
/// Each holder (a connection) takes through its own [`Share`], and the last part of the
/// budget (one byte in [`RESERVE`](Budget::RESERVE)) is kept for shares that hold little:
/// within it a share may hold at most one [`SHARE_OF_REST`](Budget::SHARE_OF_REST)th of what
/// is left. Each connection of a flood takes less of the reserve than the one before, and a
/// client holding a few KiB is served until the budget is all but spent: a few connections
/// that flood the server cannot spend what a well-behaved client needs for its next request.
/// (Hundreds can: the reserve is kept per connection, not per peer.)
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    max: usize,
    /// The part kept for shares that hold little: `max / RESERVE`.
    reserve: usize,
    /// Holders waiting in [`Share::take`]: only then does a release notify.
    waiting: AtomicUsize,
    freed: Notify,
}

impl Budget {
    /// The part of the budget (one in this many bytes) kept for shares that hold little.
    const RESERVE: usize = 8;
    /// Within the reserve, the part of what is left that one share may hold. Each share a
    /// flood brings takes about this fraction of what is left, so a client holding `h` is
    /// served until about `64 * ln(reserve / (64 * h))` such shares arrived (a few hundred
    /// for a client with a few KiB in flight).
    const SHARE_OF_REST: usize = 64;

    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            max,
            reserve: max / Self::RESERVE,
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// A new holder's account.
    pub(crate) fn share(self: &Arc<Budget>) -> Arc<Share> {
        Arc::new(Share {
            budget: self.clone(),
            held: AtomicUsize::new(0),
        })
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// One holder's account in a [`Budget`]: what it holds counts in the budget and here.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<Budget>,
    held: AtomicUsize,
}

impl Share {
    /// `n` bytes, if the budget has them for this share.
    pub(crate) fn try_take(self: &Arc<Share>, n: usize) -> Option<Charge> {
        let budget = &*self.budget;
        // Read without synchronising with the budget: racing takes of one share can overstep
        // its part of the reserve by one take each, never the budget.
        let held = self.held.load(Ordering::Relaxed).saturating_add(n);
        let mut used = budget.used.load(Ordering::Acquire);
        loop {
            let next = used.checked_add(n).filter(|&next| next <= budget.max)?;
            if next > budget.max - budget.reserve
                && held.saturating_mul(Budget::SHARE_OF_REST) > budget.max - used
            {
                return None;
            }
            match budget
                .used
                .compare_exchange_weak(used, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.held.fetch_add(n, Ordering::Relaxed);
                    return Some(Charge {
                        share: self.clone(),
                        n,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// `n` bytes whether or not the budget has them: for memory that exists already (a decoded
    /// request, a finished reply) and must be counted, so that what is taken next waits.
    pub(crate) fn charge(self: &Arc<Share>, n: usize) -> Charge {
        self.budget.used.fetch_add(n, Ordering::AcqRel);
        self.held.fetch_add(n, Ordering::Relaxed);
        Charge {
            share: self.clone(),
            n,
        }
    }

    /// `n` bytes, waiting for holders to give them back.
    pub(crate) async fn take(self: &Arc<Share>, n: usize) -> Charge {
        if let Some(bytes) = self.try_take(n) {
            return bytes;
        }
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let budget = &*self.budget;
        budget.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&budget.waiting);
        loop {
            let freed = budget.freed.notified();
            if let Some(bytes) = self.try_take(n) {
                return bytes;
            }
            freed.await;
        }
    }
}

/// Bytes charged to a [`Budget`] through a [`Share`], given back to both when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    share: Arc<Share>,
    n: usize,
}

impl Charge {
    /// How many bytes this holds.
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// The share these bytes were taken through.
    pub(crate) fn share(&self) -> &Arc<Share> {
        &self.share
    }

    /// Adds `other`'s bytes to these (and to their share, if `other` came through another).
    pub(crate) fn merge(&mut self, mut other: Charge) {
        let n = std::mem::take(&mut other.n);
        if !Arc::ptr_eq(&self.share, &other.share) {
            other.share.held.fetch_sub(n, Ordering::Relaxed);
            self.share.held.fetch_add(n, Ordering::Relaxed);
        }
        self.n += n;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.n > 0 {
            self.share.held.fetch_sub(self.n, Ordering::Relaxed);
            self.share.budget.release(self.n);
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

        let budget = Budget::new(1024);
        let share = budget.share();
        let mut x = share.try_take(600).unwrap();
        let y = share.try_take(296).unwrap();
        x.merge(y);
        assert_eq!(x.len(), 896);
        assert!(
            share.try_take(1).is_none(),
            "the reserve is for small shares"
        );
        drop(x);
        assert!(share.try_take(896).is_some());
    }

    #[test]
    fn the_last_slots_are_kept_for_holders_of_few() {
        let slots = Slots::new(1024);
        let mut flood: Vec<Slot> = (1..=896)
            .map(|n| slots.try_take_beside(n).unwrap())
            .collect();
        // 128 left: a holder may have a sixty-fourth of them.
        assert!(slots.try_take_beside(3).is_none());
        flood.push(slots.try_take_beside(2).unwrap());
        assert!(slots.try_take_beside(2).is_none(), "127 left");
        flood.push(slots.try_take_beside(1).unwrap());
        assert_eq!(slots.used(), 898);
        drop(flood);
        assert_eq!(slots.used(), 0);
    }

    #[test]
    fn the_reserve_is_kept_for_shares_that_hold_little() {
        let budget = Budget::new(8192);
        let (flood, more, small) = (budget.share(), budget.share(), budget.share());
        let held = flood.try_take(8192 - 1024).unwrap();
        assert!(flood.try_take(1).is_none());
        // Within the last eighth (1,024 bytes), a share may hold a sixty-fourth of what is
        // left.
        let a = more.try_take(16).unwrap();
        assert!(more.try_take(1).is_none(), "past its part of the reserve");
        let b = small.try_take(15).unwrap();
        assert!(
            small.try_take(1).is_none(),
            "a 64th of the 1,008 bytes left"
        );
        drop((a, b));
        let forced = flood.charge(512);
        assert!(small.try_take(9).is_none() && small.try_take(8).is_some());
        drop((held, forced));
        assert!(small.try_take(8192 - 1024).is_some());
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
