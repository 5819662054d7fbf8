//! Git inputs, through libgit2 (`git2`), never the `git` command.
//!
//! * History: every blob reachable from any ref or HEAD is scanned once, attributed to
//!   the first commit (in topological order, oldest first) that introduced it.
//! * Staged: what the index adds against HEAD; in text files only findings on added
//!   lines are reported, so a pre-commit hook does not block on old code.

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, PoisonError};

use git2::{Delta, DiffOptions, ObjectType, Oid, Repository, Sort};

use crate::finding::CommitInfo;
use crate::scan::{Collector, Origin, Scanner};

#[derive(Debug, thiserror::Error)]
#[error("git: {0}")]
pub struct GitError(String);

impl From<git2::Error> for GitError {
    fn from(e: git2::Error) -> GitError {
        GitError(e.message().to_string())
    }
}

struct Job {
    oid: Oid,
    path: String,
    commit: Arc<CommitInfo>,
}

/// The repository's top-level `.keygateignore`, for paths in history and the index.
fn keygate_ignore(repo: &Repository) -> Option<ignore::gitignore::Gitignore> {
    let root = repo.workdir()?;
    let file = root.join(crate::scan::IGNORE_FILE);
    if !file.is_file() {
        return None;
    }
    let mut b = ignore::gitignore::GitignoreBuilder::new(root);
    let _ = b.add(&file);
    b.build().ok()
}

fn ignored(ig: &Option<ignore::gitignore::Gitignore>, path: &str) -> bool {
    ig.as_ref()
        .is_some_and(|g| g.matched_path_or_any_parents(path, false).is_ignore())
}

fn wanted(d: Delta) -> bool {
    matches!(
        d,
        Delta::Added | Delta::Modified | Delta::Renamed | Delta::Copied | Delta::Typechange
    )
}

fn is_blob_mode(mode: git2::FileMode) -> bool {
    matches!(mode, git2::FileMode::Blob | git2::FileMode::BlobExecutable)
}

fn commit_info(c: &git2::Commit<'_>) -> CommitInfo {
    let author = c.author();
    let name = author.name().unwrap_or("?");
    let email = author.email().unwrap_or("?");
    CommitInfo {
        commit: c.id().to_string(),
        author: crate::finding::display_path(&format!("{name} <{email}>")),
        date: rfc3339_utc(c.time().seconds()),
    }
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`; a date outside years -9999..=9999
/// (a forged commit) as `@<seconds>`, git's raw form.
pub fn rfc3339_utc(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("@{secs}"))
}

/// Scans every blob in the history of the repository containing `path`.
pub fn scan_history(path: &Path, scanner: &Scanner, sink: &Collector) -> Result<(), GitError> {
    let repo = Repository::discover(path)?;
    let ig = keygate_ignore(&repo);
    let git_dir = repo.path().to_path_buf();
    let mut walk = repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
    walk.push_glob("*")?;
    if repo.head().is_ok() {
        // A detached HEAD is not under refs/.
        let _ = walk.push_head();
    }
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let (tx, rx) = sync_channel::<Job>(256);
    let rx = Mutex::new(rx);
    let max_blob = scanner.limits().max_entry_bytes;
    std::thread::scope(|s| -> Result<(), GitError> {
        for _ in 0..threads {
            let rx = &rx;
            let git_dir = &git_dir;
            s.spawn(move || {
                let repo = match Repository::open(git_dir) {
                    Ok(r) => r,
                    Err(e) => {
                        sink.warn("", format!("git: {}", e.message()));
                        // Drain so the producer never blocks.
                        while rx
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv()
                            .is_ok()
                        {}
                        return;
                    }
                };
                loop {
                    let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = job else { break };
                    let origin = Origin {
                        path: crate::finding::display_path(&job.path),
                        commit: Some(job.commit.clone()),
                    };
                    // Check the size in the object header before loading the blob.
                    let size = repo
                        .odb()
                        .and_then(|odb| odb.read_header(job.oid))
                        .map(|(size, _)| size as u64);
                    if let Ok(size) = size {
                        if size > max_blob {
                            sink.warn(
                                &origin.path,
                                format!(
                                    "blob {} of {size} bytes over the size limit; skipped",
                                    job.oid
                                ),
                            );
                            continue;
                        }
                    }
                    match repo.find_blob(job.oid) {
                        Ok(blob) if blob.size() as u64 > max_blob => {
                            sink.warn(
                                &origin.path,
                                format!("blob {} over the size limit; skipped", job.oid),
                            );
                        }
                        Ok(blob) => scanner.scan_bytes(blob.content(), &origin, sink),
                        Err(e) => sink.warn(
                            &origin.path,
                            format!("broken git object {}: {}; skipped", job.oid, e.message()),
                        ),
                    }
                }
            });
        }
        let mut seen: HashSet<Oid> = HashSet::new();
        let mut opts = DiffOptions::new();
        opts.ignore_submodules(true);
        for oid in walk {
            let oid = match oid {
                Ok(o) => o,
                Err(e) => {
                    sink.warn("", format!("git history walk: {}; continuing", e.message()));
                    continue;
                }
            };
            let commit = match repo.find_commit(oid) {
                Ok(c) => c,
                Err(e) => {
                    sink.warn("", format!("broken commit {oid}: {}; skipped", e.message()));
                    continue;
                }
            };
            let info = Arc::new(commit_info(&commit));
            let tree = match commit.tree() {
                Ok(t) => t,
                Err(e) => {
                    sink.warn(
                        "",
                        format!("commit {oid}: broken tree: {}; skipped", e.message()),
                    );
                    continue;
                }
            };
            let parent_tree = commit.parent(0).ok().and_then(|p| p.tree().ok());
            let diff =
                match repo.diff_tree_to_tree(parent_tree.as_ref(), Some(&tree), Some(&mut opts)) {
                    Ok(d) => d,
                    Err(e) => {
                        sink.warn("", format!("commit {oid}: {}; skipped", e.message()));
                        continue;
                    }
                };
            for delta in diff.deltas() {
                let nf = delta.new_file();
                if !wanted(delta.status()) || !is_blob_mode(nf.mode()) || nf.id().is_zero() {
                    continue;
                }
                let path = nf
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if ignored(&ig, &path) || !seen.insert(nf.id()) {
                    continue;
                }
                let job = Job {
                    oid: nf.id(),
                    path,
                    commit: info.clone(),
                };
                if tx.send(job).is_err() {
                    return Err(GitError("scanner workers stopped".into()));
                }
            }
        }
        drop(tx);
        Ok(())
    })
}

/// Scans what the index would add to HEAD.
pub fn scan_staged(path: &Path, scanner: &Scanner, sink: &Collector) -> Result<(), GitError> {
    let repo = Repository::discover(path)?;
    let ig = keygate_ignore(&repo);
    let index = repo.index()?;
    let head_tree = match repo.head() {
        Ok(h) => Some(h.peel_to_tree()?),
        Err(_) => None, // unborn branch: everything staged is new
    };
    let mut opts = DiffOptions::new();
    opts.ignore_submodules(true);
    let diff = repo.diff_tree_to_index(head_tree.as_ref(), Some(&index), Some(&mut opts))?;
    for (i, delta) in diff.deltas().enumerate() {
        let nf = delta.new_file();
        if !wanted(delta.status()) || !is_blob_mode(nf.mode()) {
            continue;
        }
        let path = nf
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if ignored(&ig, &path) {
            continue;
        }
        let blob = match repo
            .find_object(nf.id(), Some(ObjectType::Blob))
            .and_then(|o| o.peel_to_blob())
        {
            Ok(b) => b,
            Err(e) => {
                sink.warn(
                    &path,
                    format!("cannot read staged blob: {}; skipped", e.message()),
                );
                continue;
            }
        };
        // Added line numbers; None means "all" (binary or new file without a patch).
        let added: Option<HashSet<usize>> = match git2::Patch::from_diff(&diff, i) {
            Ok(Some(patch)) if !delta.flags().is_binary() => {
                let mut set = HashSet::new();
                for h in 0..patch.num_hunks() {
                    let n = patch.num_lines_in_hunk(h).unwrap_or(0);
                    for l in 0..n {
                        if let Ok(line) = patch.line_in_hunk(h, l) {
                            if line.origin() == '+' {
                                if let Some(no) = line.new_lineno() {
                                    set.insert(no as usize);
                                }
                            }
                        }
                    }
                }
                Some(set)
            }
            _ => None,
        };
        let local = Collector::default();
        scanner.scan_bytes(blob.content(), &Origin::new(path.as_str()), &local);
        sink.absorb(local, |f| match (&added, f.line) {
            (Some(set), Some(line)) => set.contains(&line),
            _ => true,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(-86_400), "1969-12-31T00:00:00Z");
    }
}
