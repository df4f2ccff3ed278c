//! The README's test command sets a fresh machine up itself: `scripts/test.sh` looks for the
//! Debian packages the tests need and installs the missing ones (as root; CI exercises that
//! path on every run). Where it cannot install — not root, no passwordless sudo — it stops at
//! once and names what is missing, instead of failing later inside one test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// A PATH holding only the tools the script's set-up step needs, minus `missing`.
fn sparse_path(dir: &Path, missing: &str) {
    for tool in [
        "python3",
        "promtool",
        "prometheus",
        "redis-server",
        "dirname",
        "id",
    ] {
        if tool == missing {
            continue;
        }
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .unwrap();
        let target = String::from_utf8(found.stdout).unwrap();
        let target = target.trim();
        assert!(
            !target.is_empty(),
            "{tool} is not installed on this machine"
        );
        std::os::unix::fs::symlink(target, dir.join(tool)).unwrap();
    }
}

#[test]
fn a_missing_package_is_named_when_it_cannot_be_installed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    sparse_path(dir.path(), "redis-server");
    // A copy of the script where `nobody` can read it, wherever this checkout lives.
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("scripts")).unwrap();
    let script = copy.path().join("scripts/test.sh");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test.sh"),
        &script,
    )
    .unwrap();
    for d in [dir.path(), copy.path(), &copy.path().join("scripts")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // As `nobody`, without sudo: the script must not try to install, and must say what to do.
    let out = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/bin/bash",
        ])
        .arg(&script)
        .env_clear()
        .env("PATH", dir.path())
        .output()
        .expect("setpriv (util-linux) runs the script as another user");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // (python3-venv may be named too: another user may not reach this machine's Python.)
    let line = err
        .lines()
        .find(|l| l.contains("missing Debian packages:"))
        .unwrap_or_else(|| panic!("no missing-package line: {err}"));
    assert!(
        line.contains("redis-server")
            && line.contains("apt-get install")
            && !line.contains("prometheus"),
        "{line}"
    );
}
