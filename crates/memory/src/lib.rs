//! Gives the system back the heap pages glibc's allocator keeps after the program freed them.
//!
//! Why: glibc returns freed memory to the system only from the top of a heap, so after a large, short-lived
//! allocation — the sidecar parsing a 3 MB Configuration into a tree of values, compiling it, then dropping the
//! tree — tens of MB of free pages stay resident for the life of the process (issue 25: 10,000 policies). Calling
//! [`release_freed`] at a quiet moment after such a peak (start, a reload) hands them back.
//!
//! This crate exists to hold ward's only `unsafe` block (an FFI call), so every other crate keeps
//! `forbid(unsafe_code)`. Elsewhere than glibc it does nothing: musl and the other allocators return large blocks
//! themselves.

/// Asks glibc to return the free pages of every arena to the system (`malloc_trim(0)`); whether it returned any.
/// Cost: it walks and locks each arena in turn (about a millisecond for a few hundred MB), so call it after a peak,
/// not per request.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_freed() -> bool {
    // SAFETY: `malloc_trim` takes no pointers and has no caller-side preconditions; glibc locks each arena while it
    // releases that arena's free pages, so it is safe to call while other threads allocate.
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    released == 1
}

/// Not glibc: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed() -> bool {
    false
}

#[cfg(test)]
mod tests {
    /// After a large allocation is freed, the call succeeds (glibc reports whether it released anything; with a
    /// 64 MiB peak freed below a live allocation it has something to release).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_pages_below_a_live_allocation_are_released() {
        let many: Vec<Vec<u8>> = (0..4096).map(|i| vec![(i % 251) as u8; 16 * 1024]).collect();
        let keep = vec![1u8; 1024];
        drop(many);
        assert!(super::release_freed(), "glibc released nothing after 64 MiB were freed");
        assert_eq!(keep[0], 1);
    }
}
