//! Gives the system back the heap pages glibc's allocator keeps after the program freed them.
//!
//! Why: glibc returns freed memory to the system only from the top of a heap, so after a large, short-lived
//! allocation — the sidecar parsing a 3 MB Configuration into a tree of values, compiling it, then dropping the
//! tree — tens of MB of free pages stay resident for the life of the process (issue 25: 10,000 policies). Calling
//! [`release_freed`] at a quiet moment after such a peak (start, a reload) hands them back.
//!
//! [`release_startup_code`] does the same for code: it unmaps the program's code pages from the process once start is
//! over, so only code that runs again comes back (issue 18: most of a sidecar's resident memory was code).
//!
//! This crate exists to hold ward's only `unsafe` blocks (FFI calls), so every other crate keeps
//! `forbid(unsafe_code)`. `release_freed` does nothing elsewhere than glibc (musl and the other allocators return
//! large blocks themselves), `release_startup_code` nothing elsewhere than Linux.

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

/// Unmaps from this process every page of the executable's own code that is resident now; returns how many bytes of
/// mappings were covered. The pages stay in the page cache, shared with
/// every other process running the binary; code that runs again is mapped back in by an ordinary (minor) page
/// fault, so what stays resident is the code the process keeps using, not the code it ran once to start.
///
/// Why: the kernel maps file pages around each faulting address (fault-around, 64 KiB; a whole large folio where
/// the page cache has one), and a start runs code from all over a 29 MB binary (argument and YAML parsing, TLS and
/// certificate set-up, SQLite, component builders). Measured on the release sidecar: most of its RSS was code
/// pages touched once during start.
///
/// Call it once a start or a reload is complete. Cost: one `madvise` per code mapping, then a few hundred minor
/// faults as the request path maps its code back (well under a millisecond in all).
#[cfg(target_os = "linux")]
pub fn release_startup_code() -> usize {
    let (Ok(maps), Ok(exe)) = (std::fs::read_to_string("/proc/self/maps"), std::fs::read_link("/proc/self/exe")) else {
        return 0;
    };
    let Some(exe) = exe.to_str() else {
        return 0;
    };
    let mut covered = 0;
    for (start, end) in code_mappings(&maps, exe) {
        // SAFETY: `start..end` is a whole mapping the kernel listed for this process: private, read-only,
        // executable and backed by the executable's own file (checked by `code_mappings`). The executable is never
        // unmapped while the process runs, so the range still holds that mapping when `madvise` runs (a shared
        // library could be unloaded in between and its range reused for data, which is why libraries are left
        // alone). For such a mapping MADV_DONTNEED only
        // removes the page-table entries; the next access maps the same file page again, so every byte of code
        // reads the same before and after, including the code running this call and code other threads run
        // meanwhile. A page made private by writing to it (a debugger's breakpoint) would revert to the file's
        // content, which is the file's own code. Nothing is unmapped or changes protection.
        #[allow(unsafe_code)]
        let done = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if done == 0 {
            covered += end - start;
        }
    }
    covered
}

/// Not Linux: nothing to do.
#[cfg(not(target_os = "linux"))]
pub fn release_startup_code() -> usize {
    0
}

/// The `start..end` ranges of the private, read-only, executable mappings of the file `exe` in a `/proc/<pid>/maps`
/// text. Anything else — writable or shared mappings, other files, anonymous or special ones (`[vdso]`) — is left
/// out, since dropping their pages could lose data or is not allowed.
fn code_mappings<'a>(maps: &'a str, exe: &'a str) -> impl Iterator<Item = (usize, usize)> + 'a {
    maps.lines().filter_map(move |line| {
        let mut fields = line.splitn(6, ' ');
        let range = fields.next()?;
        let perms = fields.next()?;
        let path = fields.nth(3)?.trim_start();
        if perms != "r-xp" || path != exe {
            return None;
        }
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (start < end).then_some((start, end))
    })
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

    /// Only the executable's own private, read-only, executable mappings are picked: never data, shared, other
    /// files' (libraries can be unloaded), anonymous or special mappings.
    #[test]
    fn only_private_read_only_code_of_files_is_picked() {
        let maps = "\
5581a0000000-5581a0100000 r--p 00000000 fd:01 42 /usr/bin/ward
5581a0100000-5581a1c00000 r-xp 00100000 fd:01 42 /usr/bin/ward
5581a1c00000-5581a1d00000 rw-p 01c00000 fd:01 42 /usr/bin/ward
7f0000000000-7f0000010000 r-xs 00000000 fd:01 43 /dev/shm/shared-code
7f0000010000-7f0000020000 rwxp 00000000 00:00 0
7f0000020000-7f0000030000 r-xp 00000000 00:00 0
7f1000000000-7f1000180000 r-xp 00028000 fd:01 44 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";
        let picked: Vec<_> = super::code_mappings(maps, "/usr/bin/ward").collect();
        assert_eq!(picked, vec![(0x5581a0100000, 0x5581a1c00000)]);
        let with_space = "5581a0100000-5581a1c00000 r-xp 00100000 fd:01 42                   /opt/my apps/ward\n";
        let picked: Vec<_> = super::code_mappings(with_space, "/opt/my apps/ward").collect();
        assert_eq!(picked, vec![(0x5581a0100000, 0x5581a1c00000)]);
    }

    /// The test binary's code mapping holds fewer resident pages after the call than before (the test harness ran
    /// plenty of code once), and code that runs again comes back.
    #[test]
    #[cfg(target_os = "linux")]
    fn code_pages_leave_and_running_code_comes_back() {
        let exe = std::fs::read_link("/proc/self/exe").expect("own executable");
        let resident = || -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
            let mut total = 0;
            let mut in_code = false;
            for line in smaps.lines() {
                if let Some(rss) = line.strip_prefix("Rss:") {
                    if in_code {
                        total += rss.trim().trim_end_matches(" kB").trim().parse::<u64>().expect("kB");
                    }
                } else if line.contains(" r-xp ") {
                    in_code = line.ends_with(exe.to_str().expect("utf-8 path"));
                } else if line.split_ascii_whitespace().next().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
                    in_code = false;
                }
            }
            total
        };
        let before = resident();
        assert!(before > 0, "the test binary's code is resident before the call");
        assert!(super::release_startup_code() > 0, "no code mapping was covered");
        let after = resident();
        // `resident` ran again after the call: code that runs again comes back.
        assert!(after < before, "resident code {after} kB after the call, {before} kB before");
    }
}
