//! Buffers for the fused CPU ops: per-thread scratch space reused from call to call, and zeroed outputs
//! written by all threads.
//!
//! A training step of a ResNet calls its convolutions ~60 times, each wanting column and gradient buffers
//! of several megabytes; allocating them afresh cost a memset or page faults per call, on one thread while
//! the others waited. Each thread keeps its largest scratch buffer instead (a few tens of MB for a whole
//! ResNet-50), and large zeroed outputs are cleared by the threads together.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with `len` floats of this thread's scratch space. Its contents are unspecified (whatever an
/// earlier call left): `f` writes before it reads. The space is kept for this thread's next call.
pub(crate) fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [f32]) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                // Freed before the larger one is made, so that the two never coexist.
                *buf = Vec::new();
                *buf = vec![0.0; len];
            }
            f(&mut buf[..len])
        }
        // Re-entered on this thread (a job stolen while `f` waits on other threads): space of its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Elements zeroed per task by [`zeros`].
const ZERO_PIECE: usize = 1 << 16;

/// `len` zeros, cleared by rayon's threads together (`vec![0.0; len]` is one thread's memset or page
/// faults while the others wait).
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()
        .par_chunks_mut(ZERO_PIECE)
        .for_each(|piece| piece.fill(MaybeUninit::new(0.0)));
    // SAFETY: every one of the first `len` elements was written just above.
    unsafe { v.set_len(len) };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_zero_at_every_length() {
        for len in [0, 1, ZERO_PIECE - 1, ZERO_PIECE, 3 * ZERO_PIECE + 5] {
            let v = zeros(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn scratch_grows_and_a_nested_call_gets_space_of_its_own() {
        with_scratch(4, |a| {
            a.fill(1.0);
            with_scratch(8, |b| {
                assert_eq!(b.len(), 8);
                b.fill(2.0);
            });
            assert!(
                a.iter().all(|&x| x == 1.0),
                "the nested call wrote into the outer space"
            );
        });
        with_scratch(16, |c| assert_eq!(c.len(), 16));
    }
}
