//! The global allocator of vl2v's binaries: jemalloc, told never to give freed pages back to the OS.
//!
//! A forward pass allocates and frees tensors of tens of MB in every layer. glibc's malloc serves those
//! with fresh `mmap`s, so every reuse pays a page fault per 4 KiB (QuickGELU over a ViT-B/16 batch: 41 ms
//! instead of 14 ms); jemalloc with decay off reuses the pages. Memory stays at the process's peak.
//! Each binary opts in with `#[global_allocator] static GLOBAL: vl2v::alloc::Allocator = vl2v::alloc::ALLOCATOR;`.

#[cfg(not(target_env = "msvc"))]
pub type Allocator = tikv_jemallocator::Jemalloc;
#[cfg(not(target_env = "msvc"))]
pub const ALLOCATOR: Allocator = tikv_jemallocator::Jemalloc;

#[cfg(target_env = "msvc")]
pub type Allocator = std::alloc::System;
#[cfg(target_env = "msvc")]
pub const ALLOCATOR: Allocator = std::alloc::System;

/// jemalloc reads its options from this symbol at start-up (tikv-jemallocator prefixes it `_rjem_`).
#[cfg(not(target_env = "msvc"))]
///
/// `calloc_madvise_threshold`: jemalloc zeroes a large `calloc` on recycled pages by `madvise(DONTNEED)`, so
/// every page faults and is cleared again on first touch, with TLB shootdowns across threads; memset is far
/// cheaper (candle allocates zeroed gradients and buffers: 820 madvise calls in 3 ResNet-18 training steps,
/// ~20% of the step).
#[used]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 75] =
    b"dirty_decay_ms:-1,muzzy_decay_ms:-1,calloc_madvise_threshold:1099511627776\0";
