#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use agentbox_oci::{Bind, Limits, Sandbox, Tmpfs};

use crate::view::{HostPath, Lookup, View};

fn sandbox(root: &Path, usr: &Path) -> Sandbox {
    Sandbox {
        id: "agentbox-000000000000".to_string(),
        rootfs: root.to_path_buf(),
        image: None,
        symlinks: Vec::new(),
        binds: vec![Bind {
            source: usr.to_path_buf(),
            target: PathBuf::from("/usr"),
            writable: false,
        }],
        tmpfs: vec![Tmpfs {
            target: PathBuf::from("/usr/tmp"),
            size: 1,
            mode: 0o755,
        }],
        argv: vec!["x".to_string()],
        env: Vec::new(),
        cwd: PathBuf::from("/"),
        uid: 0,
        uid_range: Some((100_000, 65_536)),
        hostname: "h".to_string(),
        limits: Limits::default(),
        seccomp: agentbox_seccomp::default_allowlist().unwrap(),
        state_dir: root.to_path_buf(),
        oci_runtime: None,
    }
}

#[test]
fn resolves_through_binds_links_and_tmpfs() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let usr = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(usr.path().join("bin")).unwrap();
    std::fs::create_dir_all(usr.path().join("tmp")).unwrap();
    let tool = usr.path().join("bin/tool");
    std::fs::write(&tool, "").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(usr.path().join("bin/data"), "").unwrap();
    std::fs::write(usr.path().join("tmp/hidden"), "").unwrap();
    std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
    // An absolute link inside the view points into the view, not the host.
    std::os::unix::fs::symlink("/usr/bin/tool", usr.path().join("bin/alias")).unwrap();
    let sb = sandbox(root.path(), usr.path());
    let view = View::new(&sb);
    assert_eq!(
        view.host_path(Path::new("/usr/bin/tool")),
        HostPath::At(usr.path().join("bin/tool"))
    );
    assert_eq!(
        view.host_path(Path::new("/usr/tmp/hidden")),
        HostPath::InTmpfs
    );
    assert_eq!(
        view.resolve(Path::new("/bin/tool")).unwrap(),
        Some(tool.clone())
    );
    assert_eq!(
        view.resolve(Path::new("/bin/alias")).unwrap(),
        Some(tool.clone())
    );
    assert_eq!(
        view.resolve(Path::new("/bin/../bin/tool")).unwrap(),
        Some(tool.clone())
    );
    assert_eq!(view.resolve(Path::new("/usr/tmp/hidden")).unwrap(), None);
    assert_eq!(
        view.find_command("tool").unwrap(),
        Lookup::Executable(tool.clone())
    );
    assert!(matches!(
        view.find_command("data").unwrap(),
        Lookup::NotExecutable(_)
    ));
    assert_eq!(view.find_command("nope").unwrap(), Lookup::Missing);
    assert_eq!(view.find_command("/bin/nope").unwrap(), Lookup::Missing);
    assert!(!view.has_passwd_entry(1000).unwrap());
    // Directories leading to a mount point exist in the view even when the root lacks them.
    let mut nested = sb.clone();
    nested.binds[0].target = PathBuf::from("/opt/deep/usr");
    let view = View::new(&nested);
    assert_eq!(
        view.resolve(Path::new("/opt/deep/usr/bin/tool")).unwrap(),
        Some(tool.clone())
    );
    assert_eq!(view.resolve(Path::new("/opt/deep/other")).unwrap(), None);
}

#[test]
fn finds_passwd_entries() {
    let root = tempfile::tempdir().unwrap();
    let usr = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n",
    )
    .unwrap();
    let sb = sandbox(root.path(), usr.path());
    let view = View::new(&sb);
    assert!(view.has_passwd_entry(1000).unwrap());
    assert!(!view.has_passwd_entry(100).unwrap());
}
