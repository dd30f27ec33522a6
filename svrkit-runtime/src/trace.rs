//! Trace ids: made where a trace starts (a call with no request above it, or a request that
//! came without one), then carried in every frame header down the call chain.

use std::cell::{Cell, RefCell};
use std::fmt;

use bytes::Bytes;

/// A new 16-byte trace id. Ids need to be unique, not secret: they come from a per-thread
/// generator (SplitMix64) seeded from the process's random hasher keys. They are made 256 at
/// a time into one buffer that each id shares, so that making one costs a few
/// multiplications and a reference count rather than an allocation.
pub fn new_id() -> Bytes {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(crate::random::seed());
        static BATCH: RefCell<Bytes> = const { RefCell::new(Bytes::new()) };
    }
    BATCH.with(|batch| {
        let mut batch = batch.borrow_mut();
        if batch.is_empty() {
            let mut ids = Vec::with_capacity(ID_LEN * IDS_PER_BATCH);
            STATE.with(|s| {
                for _ in 0..IDS_PER_BATCH * 2 {
                    ids.extend_from_slice(&crate::random::step(s).to_be_bytes());
                }
            });
            *batch = Bytes::from(ids);
        }
        batch.split_to(ID_LEN)
    })
}

/// Bytes in a trace id.
const ID_LEN: usize = 16;
/// Ids made at once.
const IDS_PER_BATCH: usize = 256;

/// Shows a trace id as lowercase hex (`-` when empty).
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_across_threads() {
        let mut ids: Vec<Bytes> = (0..4)
            .map(|_| std::thread::spawn(|| (0..1000).map(|_| new_id()).collect::<Vec<_>>()))
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert!(ids.iter().all(|id| id.len() == 16));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 4000);
        assert_eq!(Hex(&[0x0a, 0xff]).to_string(), "0aff");
        assert_eq!(Hex(&[]).to_string(), "-");
    }
}
