//! The threads of this process, read from `/proc/self/task`, for tests that
//! check what a store leaves running.

/// The names of this process's threads that have not begun to exit, so that
/// thread-counting tests share one reading of `/proc`. A joined thread can
/// still be listed for a moment: `join` returns when the thread's exit clears
/// its id, before the kernel removes it from `/proc/self/task`; by then its
/// flags carry `PF_EXITING`, set at the start of its exit, so it is not listed.
pub fn live_threads() -> Vec<String> {
    const PF_EXITING: u64 = 0x4;
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc");
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // "tid (comm) state ppid pgrp session tty_nr tpgid flags …"
            let (head, rest) = stat.rsplit_once(") ")?;
            let name = head.split_once(" (")?.1;
            let flags: u64 = rest.split(' ').nth(6)?.parse().ok()?;
            (flags & PF_EXITING == 0).then(|| name.to_owned())
        })
        .collect()
}

/// Whether this is the process of its own that the test `test` runs alone in
/// (`env` set); if not, runs it there and asserts that it passed, so that a
/// thread count does not include other tests' threads.
pub fn alone_in_this_process(test: &str, env: &str) -> bool {
    if std::env::var_os(env).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary");
    let status = std::process::Command::new(exe)
        .args(["--exact", test, "--test-threads=1"])
        .env(env, "1")
        .status()
        .expect("start");
    assert!(status.success());
    false
}
