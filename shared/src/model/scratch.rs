//! Buffers for the fused CPU ops: per-thread scratch space reused from call to call, and outputs
//! cleared by all threads.
//!
//! A training step of a ResNet calls its convolutions ~60 times, each wanting column and gradient buffers
//! of several megabytes; allocating them afresh cost a memset or page faults per call, on one thread while
//! the others waited. Each thread keeps its largest scratch buffer instead (a few tens of MB for a whole
//! ResNet-50), and large zeroed outputs are cleared by the threads together.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;

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
    written(len, ZERO_PIECE, |_, _| ())
}

/// A new vector of `len` floats whose pieces of `piece` elements (the last may be shorter) rayon's
/// threads hand zeroed to `write(at, piece)`, `at` being the piece's range in the vector, for an op that
/// overwrites its output. Each piece is cleared just before its writer runs, while it sits in that
/// thread's cache, where clearing the whole output first went through memory once more.
pub(crate) fn written(
    len: usize,
    piece: usize,
    write: impl Fn(Range<usize>, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    let piece = piece.max(1);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(piece)
        .enumerate()
        .for_each(|(i, part)| {
            part.fill(MaybeUninit::new(0.0));
            // SAFETY: every element of `part` was written just above, and `MaybeUninit<f32>` has the
            // layout of `f32`.
            let part = unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) };
            write(i * piece..i * piece + part.len(), part);
        });
    // SAFETY: the pieces cover the first `len` elements, each written above.
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
    fn written_pieces_are_zeroed_indexed_and_cover_the_vector() {
        for (len, piece) in [
            (0, 4),
            (1, 4),
            (12, 4),
            (13, 4),
            (3 * ZERO_PIECE + 5, ZERO_PIECE),
        ] {
            let v = written(len, piece, |at, part| {
                assert!(part.iter().all(|&x| x == 0.0), "piece {at:?} not zeroed");
                assert_eq!(at.start % piece, 0);
                assert!(part.len() == piece || at.end == len);
                assert_eq!(at.len(), part.len());
                for (j, x) in part.iter_mut().enumerate() {
                    *x = (at.start + j) as f32;
                }
            });
            assert_eq!(v.len(), len);
            assert!(v.iter().enumerate().all(|(j, &x)| x == j as f32));
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
