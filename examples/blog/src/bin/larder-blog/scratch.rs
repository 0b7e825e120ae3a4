//! A fresh SQLite file for the commands that run a workload when no
//! `--database-url` is given (`demo`, `bench`).

use std::path::PathBuf;

/// A fresh SQLite file in the temporary directory, removed with its `-wal` and
/// `-shm` files and the `.locks` directory larder's locks make beside it
/// when dropped.
pub(crate) struct ScratchFile(PathBuf);

impl ScratchFile {
    /// `url` when given; otherwise the URL of a new scratch file, which lives as
    /// long as the returned guard.
    pub(crate) fn url_or_new(url: Option<&str>, purpose: &str) -> (String, Option<ScratchFile>) {
        if let Some(url) = url {
            return (url.to_owned(), None);
        }
        let name = format!(
            "larder-{purpose}-{}-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let file = ScratchFile(std::env::temp_dir().join(name));
        (format!("sqlite://{}", file.0.display()), Some(file))
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
        let mut locks = self.0.clone().into_os_string();
        locks.push(".locks");
        let _ = std::fs::remove_dir_all(locks);
    }
}
