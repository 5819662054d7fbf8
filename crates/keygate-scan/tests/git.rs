//! `--git` history, `--staged`, and `keygate hook install`, on repositories built with
//! libgit2 in the test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs;
use std::path::Path;

use common::{Gen, hook_args, scan};
use git2::{Repository, Signature, Time};

fn commit_all(repo: &Repository, msg: &str, when: i64) -> git2::Oid {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree_id = index.write_tree().unwrap();
    let tree = repo.find_tree(tree_id).unwrap();
    let sig = Signature::new("Dev Eloper", "dev@acme.test", &Time::new(when, 0)).unwrap();
    let parents: Vec<git2::Commit<'_>> = repo
        .head()
        .ok()
        .map(|h| h.peel_to_commit().unwrap())
        .into_iter()
        .collect();
    let parent_refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parent_refs)
        .unwrap()
}

fn stage(repo: &Repository, path: &str) {
    let mut index = repo.index().unwrap();
    index.add_path(Path::new(path)).unwrap();
    index.write().unwrap();
}

#[test]
fn history_finds_a_key_added_then_removed_with_commit_author_and_date() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let mut g = Gen::new(7);
    let key = g.github();
    fs::write(dir.path().join("README.md"), "# app\n").unwrap();
    commit_all(&repo, "init", 1_700_000_000);
    fs::write(
        dir.path().join("deploy.sh"),
        format!("#!/bin/sh\nexport GH_TOKEN={key}\n"),
    )
    .unwrap();
    let leak = commit_all(&repo, "add deploy", 1_700_000_100);
    // Later edits keep the key: new blobs, same secret, still reported once.
    fs::write(
        dir.path().join("deploy.sh"),
        format!("#!/bin/sh\n# deploy\nexport GH_TOKEN={key}\n"),
    )
    .unwrap();
    commit_all(&repo, "comment", 1_700_000_150);
    fs::write(
        dir.path().join("deploy.sh"),
        "#!/bin/sh\nexport GH_TOKEN=$GH_TOKEN\n",
    )
    .unwrap();
    commit_all(&repo, "remove key", 1_700_000_200);

    // The working tree is clean now…
    let p = dir.path().to_str().unwrap();
    let r = scan(&[p]);
    assert_eq!(r.code, 0, "{}", r.out);
    // …but history is not.
    let r = scan(&[p, "--git", "--format", "json"]);
    assert_eq!(r.code, 1, "{}", r.err);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    let f = v["findings"].as_array().unwrap();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0]["path"], "deploy.sh");
    assert_eq!(f[0]["line"], 2);
    assert_eq!(f[0]["commit"]["commit"], leak.to_string());
    assert_eq!(f[0]["commit"]["author"], "Dev Eloper <dev@acme.test>");
    assert_eq!(f[0]["commit"]["date"], "2023-11-14T22:15:00Z");
    assert!(!r.out.contains(&key));
    // The text form names the commit too.
    let r = scan(&[p, "--git"]);
    let short = &leak.to_string()[..12];
    assert!(
        r.out.contains(&format!(
            "(commit {short}, Dev Eloper <dev@acme.test>, 2023-11-14T22:15:00Z)"
        )),
        "{}",
        r.out
    );
    assert!(
        r.out.starts_with("deploy.sh:2:17: github-pat-token"),
        "{}",
        r.out
    );
}

#[test]
fn history_covers_other_branches_and_scans_each_blob_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let mut g = Gen::new(8);
    let key = g.stripe();
    fs::write(dir.path().join("a.txt"), "hello\n").unwrap();
    let base = commit_all(&repo, "init", 1_600_000_000);
    // Same content committed under two names: one blob, reported at its first path.
    fs::write(dir.path().join("pay.env"), format!("STRIPE={key}\n")).unwrap();
    fs::write(dir.path().join("pay-copy.env"), format!("STRIPE={key}\n")).unwrap();
    let side = commit_all(&repo, "side", 1_600_000_100);
    repo.branch("side", &repo.find_commit(side).unwrap(), false)
        .unwrap();
    // Move main back to before the key.
    repo.reference("refs/heads/main-like", base, true, "x")
        .unwrap();
    repo.set_head("refs/heads/main-like").unwrap();
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .unwrap();
    repo.find_reference("refs/heads/master")
        .or_else(|_| repo.find_reference("refs/heads/main"))
        .map(|mut r| r.delete().unwrap())
        .ok();

    let r = scan(&[dir.path().to_str().unwrap(), "--git"]);
    assert_eq!(r.code, 1, "{}", r.err);
    assert_eq!(r.out.lines().count(), 1, "one blob, one finding: {}", r.out);
    assert!(r.out.contains("stripe-secret-key"));
}

#[test]
fn staged_reports_only_added_lines() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let mut g = Gen::new(9);
    let old = g.github();
    let new = g.github();
    fs::write(dir.path().join("conf.env"), format!("OLD={old}\n")).unwrap();
    commit_all(&repo, "old key", 1_650_000_000);
    let p = dir.path().to_str().unwrap();

    // Nothing staged: clean, even though HEAD holds a key.
    let r = scan(&[p, "--staged"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);

    // Unstaged change: not scanned.
    fs::write(
        dir.path().join("conf.env"),
        format!("OLD={old}\nNEW={new}\n"),
    )
    .unwrap();
    let r = scan(&[p, "--staged"]);
    assert_eq!(r.code, 0);

    // Staged: only the added line is reported.
    stage(&repo, "conf.env");
    let r = scan(&[p, "--staged"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.out.lines().count(), 1, "{}", r.out);
    assert!(
        r.out.starts_with("conf.env:2:5: github-pat-token"),
        "{}",
        r.out
    );

    // A new file counts whole.
    fs::write(
        dir.path().join("new.txt"),
        format!("\n\nx {}\n", g.google()),
    )
    .unwrap();
    stage(&repo, "new.txt");
    let r = scan(&[p, "--staged"]);
    assert_eq!(r.out.lines().count(), 2, "{}", r.out);
    assert!(r.out.contains("new.txt:3:"), "{}", r.out);
}

#[test]
fn keygateignore_applies_to_trees_history_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let mut g = Gen::new(10);
    fs::create_dir_all(dir.path().join("tests/fixtures")).unwrap();
    fs::write(dir.path().join(".keygateignore"), "tests/fixtures/\n").unwrap();
    fs::write(
        dir.path().join("tests/fixtures/keys.txt"),
        format!("k={}\n", g.github()),
    )
    .unwrap();
    commit_all(&repo, "fixtures", 1_700_000_000);
    let p = dir.path().to_str().unwrap();
    assert_eq!(scan(&[p]).code, 0);
    assert_eq!(scan(&[p, "--git"]).code, 0);
    fs::write(
        dir.path().join("tests/fixtures/more.txt"),
        format!("k={}\n", g.github()),
    )
    .unwrap();
    fs::write(dir.path().join("app.txt"), format!("k={}\n", g.github())).unwrap();
    stage(&repo, "tests/fixtures/more.txt");
    stage(&repo, "app.txt");
    let r = scan(&[p, "--staged"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.out.lines().count(), 1, "{}", r.out);
    assert!(r.out.starts_with("app.txt:1:"), "{}", r.out);
    // Without the ignore file the fixtures are reported.
    fs::remove_file(dir.path().join(".keygateignore")).unwrap();
    assert_eq!(scan(&[p]).code, 1);
    assert_eq!(scan(&[p, "--git"]).code, 1);
}

#[test]
fn broken_git_object_is_a_warning_and_the_scan_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let mut g = Gen::new(12);
    fs::write(dir.path().join("ok.txt"), format!("k={}\n", g.github())).unwrap();
    fs::write(
        dir.path().join("victim.txt"),
        "some text that will be corrupted\n",
    )
    .unwrap();
    commit_all(&repo, "two files", 1_700_000_000);
    let oid = repo.blob_path(&dir.path().join("victim.txt")).unwrap();
    let hex = oid.to_string();
    let obj = dir
        .path()
        .join(".git/objects")
        .join(&hex[..2])
        .join(&hex[2..]);
    let mut perm = fs::metadata(&obj).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    fs::set_permissions(&obj, perm).unwrap();
    fs::write(&obj, b"not a zlib stream").unwrap();
    let r = scan(&[dir.path().to_str().unwrap(), "--git"]);
    assert_eq!(r.code, 1, "{}", r.err);
    assert!(r.out.contains("ok.txt:1:"), "{}", r.out);
    assert!(
        r.err.contains("victim.txt") && r.err.contains("skipped"),
        "{}",
        r.err
    );
}

#[test]
fn staged_outside_a_repository_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = scan(&[dir.path().to_str().unwrap(), "--staged"]);
    assert_eq!(r.code, 2);
    assert!(r.err.starts_with("keygate scan: error: git:"), "{}", r.err);
    let r = scan(&["a", "b", "--git"]);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("at most one path"), "{}", r.err);
}

#[test]
fn hook_install_writes_an_executable_hook_and_respects_existing_ones() {
    let dir = tempfile::tempdir().unwrap();
    Repository::init(dir.path()).unwrap();
    let repo = dir.path().to_str().unwrap();
    let hook =
        keygate_scan::hook::install(&hook_args(&["--repo", repo]).repo, "keygate", false).unwrap();
    assert_eq!(hook, dir.path().join(".git/hooks/pre-commit"));
    let text = fs::read_to_string(&hook).unwrap();
    assert!(text.starts_with("#!/bin/sh\n"));
    assert!(text.contains("exec keygate scan --staged --no-progress\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&hook).unwrap().permissions().mode() & 0o111,
            0o111
        );
    }
    // Reinstalling over our own hook is fine; over a foreign one needs --force.
    keygate_scan::hook::install(dir.path(), "keygate", false).unwrap();
    assert!(
        keygate_scan::hook::installed(dir.path()).unwrap().is_some(),
        "the hook just installed is found"
    );
    fs::write(&hook, "#!/bin/sh\nmake lint\n").unwrap();
    assert_eq!(
        keygate_scan::hook::installed(dir.path()).unwrap(),
        None,
        "another program's hook is not keygate's"
    );
    let err = keygate_scan::hook::install(dir.path(), "keygate", false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(fs::read_to_string(&hook).unwrap(), "#!/bin/sh\nmake lint\n");
    keygate_scan::hook::install(dir.path(), "/opt/keygate/bin/keygate", true).unwrap();
    assert!(
        fs::read_to_string(&hook)
            .unwrap()
            .contains("exec /opt/keygate/bin/keygate scan")
    );
    assert!(keygate_scan::hook::install(dir.path(), "keygate; rm -rf /'", true).is_err());
    let outside = tempfile::tempdir().unwrap();
    assert!(keygate_scan::hook::install(outside.path(), "keygate", false).is_err());
}
