//! The CLI's argument handling under random input: whatever the arguments, the
//! binary exits (no hang), never panics, and a failure is reported on stderr:
//! a usage error as clap's message with status 2, any other as one line.

use std::process::Command;
use std::time::{Duration, Instant};

use proptest::prelude::*;

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("migrate".to_owned()),
        Just("database".to_owned()),
        Just("demo".to_owned()),
        Just("run".to_owned()),
        Just("revert".to_owned()),
        Just("redo".to_owned()),
        Just("status".to_owned()),
        Just("pending".to_owned()),
        Just("generate".to_owned()),
        Just("setup".to_owned()),
        Just("drop".to_owned()),
        Just("-n".to_owned()),
        Just("--all".to_owned()),
        Just("--users".to_owned()),
        Just("--database-url".to_owned()),
        Just("--migrations-dir".to_owned()),
        "-?[0-9]{1,20}",
        "(sqlite|postgres|mysql|ftp)://[a-z:@/.%?=]{0,20}",
        "\\PC{0,16}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_arguments_never_panic(args in proptest::collection::vec(word(), 0..6)) {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_larder"))
            .args(&args)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("MIGRATION_DIRECTORY")
            // A server URL that happens to parse must fail fast, not wait on a network.
            .env("PGCONNECT_TIMEOUT", "2")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        prop_assert!(started.elapsed() < Duration::from_secs(60), "{:?} took too long", args);
        prop_assert!(!stderr.contains("panicked"), "{:?} panicked: {}", args, stderr);
        prop_assert_ne!(output.status.code(), Some(101), "{:?}: {}", args, stderr);
        match output.status.code() {
            Some(0) => {}
            // clap's usage errors: exit status 2 and its own message.
            Some(2) => prop_assert!(stderr.starts_with("error:") || stderr.contains("Usage:"), "{:?}: {}", args, stderr),
            _ => {
                prop_assert!(stderr.starts_with("larder: error: "), "{:?}: {}", args, stderr);
                prop_assert_eq!(stderr.trim_end().lines().count(), 1, "{:?}: {}", args, stderr);
            }
        }
    }
}
