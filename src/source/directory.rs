//! The fleet repo from a directory on disk (development): watched for changes.

use std::path::Path;

use super::SourceError;

/// Watches a local directory (recursively) and calls `on_change` once changes have been quiet
/// for `quiet`: an editor's save of several files is one re-sync. The watch lasts as long as
/// the returned watcher.
pub fn watch_directory(
    dir: &Path,
    quiet: std::time::Duration,
    on_change: impl Fn() + Send + 'static,
) -> Result<notify::RecommendedWatcher, SourceError> {
    use notify::Watcher;
    let (sender, receiver) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| !event.kind.is_access()) {
            let _ = sender.send(());
        }
    })
    .map_err(|error| SourceError::Cache {
        path: dir.to_path_buf(),
        problem: format!("watching: {error}"),
    })?;
    watcher
        .watch(dir, notify::RecursiveMode::Recursive)
        .map_err(|error| SourceError::Cache {
            path: dir.to_path_buf(),
            problem: format!("watching: {error}"),
        })?;
    std::thread::spawn(move || {
        // Wait for a change, then for `quiet` without one.
        while receiver.recv().is_ok() {
            while receiver.recv_timeout(quiet).is_ok() {}
            on_change();
        }
    });
    Ok(watcher)
}
