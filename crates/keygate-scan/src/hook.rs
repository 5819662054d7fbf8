//! `keygate hook install`: a git pre-commit hook that runs `keygate scan --staged`.

use std::path::{Path, PathBuf};

/// Marks hooks this crate wrote, so reinstalling may replace them.
pub const MARKER: &str = "# keygate pre-commit hook";

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("not in a git repository: {0}")]
    NotARepo(String),
    #[error("{0} exists and was not written by keygate; use --force to replace it")]
    Exists(String),
    #[error("the hook command must not be empty or hold quotes or line breaks")]
    BadCommand,
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The hook script.
pub fn script(command: &str) -> String {
    format!(
        "#!/bin/sh\n{MARKER}: blocks commits that add secrets.\n\
         # Accept a line with a `keygate:allow` comment, or record known findings with\n\
         # `keygate scan --write-baseline .keygate-baseline.json`.\n\
         if [ -f .keygate-baseline.json ]; then\n\
         \texec {command} scan --staged --no-progress --baseline .keygate-baseline.json\n\
         fi\n\
         exec {command} scan --staged --no-progress\n"
    )
}

/// Writes `<git dir>/hooks/pre-commit` (or under `core.hooksPath`); returns its path.
pub fn install(repo: &Path, command: &str, force: bool) -> Result<PathBuf, HookError> {
    if command.trim().is_empty() || command.contains(['"', '\'', '\n', '\r', '`', '$']) {
        return Err(HookError::BadCommand);
    }
    let hooks_dir = hooks_dir(repo)?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| HookError::Io { path, source }
    };
    std::fs::create_dir_all(&hooks_dir).map_err(io(&hooks_dir))?;
    let hook = hooks_dir.join("pre-commit");
    if let Ok(existing) = std::fs::read_to_string(&hook) {
        if !existing.contains(MARKER) && !force {
            return Err(HookError::Exists(hook.display().to_string()));
        }
    }
    std::fs::write(&hook, script(command)).map_err(io(&hook))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
            .map_err(io(&hook))?;
    }
    Ok(hook)
}

/// Where git runs `repo`'s hooks from: `core.hooksPath` when set, else `<git dir>/hooks`.
fn hooks_dir(repo: &Path) -> Result<PathBuf, HookError> {
    let r = git2::Repository::discover(repo)
        .map_err(|e| HookError::NotARepo(e.message().to_string()))?;
    Ok(
        match r
            .config()
            .ok()
            .and_then(|c| c.get_path("core.hooksPath").ok())
        {
            Some(p) if p.is_absolute() => p,
            Some(p) => r.workdir().unwrap_or_else(|| r.path()).join(p),
            None => r.path().join("hooks"),
        },
    )
}

/// The pre-commit hook of `repo` if it is keygate's (written by [`install`]) and
/// executable; `Ok(None)` when there is none or it is another program.
pub fn installed(repo: &Path) -> Result<Option<PathBuf>, HookError> {
    let hook = hooks_dir(repo)?.join("pre-commit");
    let Ok(text) = std::fs::read_to_string(&hook) else {
        return Ok(None);
    };
    if !text.contains(MARKER) {
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&hook)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        if mode & 0o111 == 0 {
            return Ok(None);
        }
    }
    Ok(Some(hook))
}
