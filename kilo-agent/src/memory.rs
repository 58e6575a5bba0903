//! Giving the heap an apply freed back to the kernel.
//!
//! Applying a large plan allocates a great deal for a moment (the plan, the device's
//! configuration, the firewall's rule sets, the kernel's answers), and glibc keeps what is freed
//! in its arenas for the next allocation: a thousand-peer apply left several megabytes resident
//! that nothing used until the next one. [`release_freed_heap`] hands those pages back; the
//! driver calls it once the actions of an event that applied a plan or read the device are
//! carried out (a resync every `--resync-period`, not on every event).

/// Returns the free pages of the C allocator's arenas to the kernel (glibc's `malloc_trim`).
/// Elsewhere than on glibc, it does nothing.
pub fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // The one `unsafe` of kilo-rs's own crates: a C function can only be called through FFI.
    // SAFETY: `malloc_trim` takes no pointer and touches only glibc's own arenas, under their
    // locks; any thread may call it at any time, and the Rust allocator (glibc's malloc) stays
    // consistent. Its result only says whether memory was released.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// This process's resident set, in bytes.
    fn resident() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_below_a_live_block_goes_back_to_the_kernel() {
        // 32 MiB in blocks small enough for the heap (not mmap), written so they are resident,
        // each followed by a small live block: freeing them leaves holes that glibc cannot give
        // back from the heap's top, so it keeps their pages until they are trimmed.
        let (mut blocks, mut pins) = (Vec::with_capacity(2_048), Vec::with_capacity(2_048));
        for i in 0..2_048 {
            blocks.push(vec![i as u8 | 1; 16 * 1024]);
            pins.push(Box::new([i as u8; 64]));
        }
        drop(blocks);
        let before = resident();
        super::release_freed_heap();
        let after = resident();
        assert!(
            after + (16 << 20) <= before,
            "resident {before} bytes before the trim, {after} after: less than 16 MiB released"
        );
        // The allocator keeps working over the released pages.
        let again: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 16 * 1024]).collect();
        assert!(again.iter().enumerate().all(|(i, b)| b.iter().all(|&x| x == i as u8)));
        assert!(pins.iter().enumerate().all(|(i, p)| **p == [i as u8; 64]));
    }
}
