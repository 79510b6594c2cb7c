use super::*;
use agentbox_policy::{MountSpec, PolicySpec};

fn layout() -> HostLayout {
    HostLayout {
        entries: vec![
            ("/usr".into(), HostEntry::Dir),
            ("/bin".into(), HostEntry::Symlink("usr/bin".into())),
            ("/lib32".into(), HostEntry::Missing),
            ("/etc/ld.so.cache".into(), HostEntry::File),
        ],
        resolv_conf: None,
    }
}

fn policy(spec: PolicySpec) -> Policy {
    spec.validate(None).unwrap()
}

#[test]
fn host_image_is_a_tmpfs_root_with_read_only_system_binds() {
    let p = plan(
        &policy(PolicySpec::default()),
        &layout(),
        &[],
        Flavour::Namespaces,
    );
    assert!(matches!(p.steps[0], Step::RootTmpfs { size } if size == 1 << 30));
    assert!(p.steps.contains(&Step::Bind {
        source: Source::Host("/usr".into()),
        target: "/usr".into(),
        writable: false,
        is_dir: true
    }));
    assert!(p.steps.contains(&Step::Symlink {
        path: "/bin".into(),
        target: "usr/bin".into()
    }));
    assert!(!p
        .steps
        .iter()
        .any(|s| matches!(s, Step::Bind { target, .. } if target == Path::new("/lib32"))));
    assert!(p.steps.contains(&Step::Proc));
    for masked in PROC_MASKED_FILES {
        assert!(p.steps.contains(&Step::MaskFile(masked.into())), "{masked}");
    }
    assert!(p.steps.contains(&Step::ReadOnly("/proc/sys".into())));
    // The only writable binds are device nodes.
    for s in &p.steps {
        if let Step::Bind {
            target,
            writable: true,
            ..
        } = s
        {
            assert!(target.starts_with("/dev"), "{target:?}");
        }
    }
}

#[test]
fn proc_comes_after_dev_so_masks_can_use_dev_null() {
    let p = plan(
        &policy(PolicySpec::default()),
        &layout(),
        &[],
        Flavour::Namespaces,
    );
    let pos = |want: &Step| p.steps.iter().position(|s| s == want).unwrap();
    let null = Step::Bind {
        source: Source::Host("/dev/null".into()),
        target: "/dev/null".into(),
        writable: true,
        is_dir: false,
    };
    assert!(pos(&null) < pos(&Step::Proc));
    assert!(pos(&Step::Proc) < pos(&Step::MaskFile("/proc/kcore".into())));
}

#[test]
fn chroot_flavour_has_no_proc() {
    let p = plan(
        &policy(PolicySpec::default()),
        &layout(),
        &[],
        Flavour::Chroot,
    );
    assert!(!p
        .steps
        .iter()
        .any(|s| matches!(s, Step::Proc | Step::DevPts | Step::MaskFile(_))));
}

#[test]
fn engine_flavour_leaves_dev_to_the_engine() {
    let dev = std::path::Path::new("/dev");
    let under_dev = |s: &Step| match s {
        Step::Bind { target: path, .. } | Step::Symlink { path, .. } | Step::Dir { path, .. } => {
            path.starts_with(dev) && path != dev
        }
        _ => false,
    };
    let engine = plan(
        &policy(PolicySpec::default()),
        &layout(),
        &[],
        Flavour::Engine,
    );
    assert!(!engine.steps.iter().any(under_dev));
    assert!(!engine
        .steps
        .iter()
        .any(|s| matches!(s, Step::Proc | Step::DevPts)));
    // Only its mount point, for the engine's own /dev.
    assert!(engine
        .steps
        .iter()
        .any(|s| matches!(s, Step::Dir { path, .. } if path == std::path::Path::new("/dev"))));
    let chroot = plan(
        &policy(PolicySpec::default()),
        &layout(),
        &[],
        Flavour::Chroot,
    );
    assert!(chroot.steps.iter().filter(|s| under_dev(s)).count() >= 6);
}

#[test]
fn dir_image_overlays_the_image_opened_after_user_sources() {
    let spec = PolicySpec {
        image: Some("/srv/root".into()),
        workspace: Some("/srv/ws".into()),
        mounts: vec![MountSpec::Bind {
            source: "/data".into(),
            target: "/data".into(),
            writable: false,
        }],
        ..Default::default()
    };
    let p = plan(
        &policy(spec),
        &layout(),
        &[true, false],
        Flavour::Namespaces,
    );
    assert_eq!(
        p.steps[0],
        Step::RootOverlay {
            lower: Source::Opened(2),
            size: 1 << 30
        }
    );
    assert!(!p.steps.iter().any(
        |s| matches!(s, Step::Bind { source: Source::Host(h), .. } if h == Path::new("/usr"))
    ));
    assert!(p.steps.contains(&Step::Bind {
        source: Source::Opened(0),
        target: "/workspace".into(),
        writable: true,
        is_dir: true
    }));
    assert!(p.steps.contains(&Step::Bind {
        source: Source::Opened(1),
        target: "/data".into(),
        writable: false,
        is_dir: false
    }));
    assert!(!p
        .steps
        .iter()
        .any(|s| matches!(s, Step::Dir { path, .. } if path == Path::new("/workspace"))));
}

#[test]
fn landlock_rules_follow_the_mounts() {
    let spec = PolicySpec {
        mounts: vec![
            MountSpec::Bind {
                source: "/ro".into(),
                target: "/ro".into(),
                writable: false,
            },
            MountSpec::Bind {
                source: "/rw".into(),
                target: "/rw".into(),
                writable: true,
            },
            MountSpec::Tmpfs {
                target: "/scratch".into(),
                size: None,
            },
        ],
        ..Default::default()
    };
    let p = plan(&policy(spec), &layout(), &[true, true], Flavour::Namespaces);
    let access = |path: &str| {
        p.landlock
            .iter()
            .filter(|r| r.path == Path::new(path))
            .map(|r| r.access)
            .collect::<Vec<_>>()
    };
    assert_eq!(access("/"), [FsAccess::ReadExec]);
    assert_eq!(access("/rw"), [FsAccess::ReadWrite]);
    assert_eq!(access("/scratch"), [FsAccess::ReadWrite]);
    assert_eq!(access("/ro"), Vec::<FsAccess>::new());
    assert_eq!(access("/usr"), Vec::<FsAccess>::new());
    assert_eq!(access("/tmp"), [FsAccess::ReadWrite]);
    assert_eq!(access("/workspace"), [FsAccess::ReadWrite]);
    assert_eq!(access("/dev/null"), [FsAccess::Device]);
}

#[test]
fn unprivileged_user_owns_the_workspace_and_gets_a_passwd_entry() {
    let p = plan(
        &policy(PolicySpec {
            user: Some(1000),
            ..Default::default()
        }),
        &layout(),
        &[],
        Flavour::Namespaces,
    );
    assert!(p.steps.contains(&Step::Dir {
        path: "/workspace".into(),
        mode: 0o755,
        owner: 1000
    }));
    let passwd = p.steps.iter().find_map(|s| match s {
        Step::File { path, contents, .. } if path == Path::new("/etc/passwd") => {
            Some(contents.clone())
        }
        _ => None,
    });
    assert!(passwd.unwrap().contains(":1000:1000:"));
    assert!(!p.landlock.iter().any(|r| r.path == Path::new("/root")));
}

#[test]
fn a_resolv_conf_is_written_only_when_the_layout_has_one() {
    let none = plan(
        &policy(PolicySpec::default()),
        &layout(),
        &[],
        Flavour::Namespaces,
    );
    let is_resolv =
        |s: &Step| matches!(s, Step::File { path, .. } if path == Path::new("/etc/resolv.conf"));
    assert!(!none.steps.iter().any(is_resolv));
    let mut with = layout();
    with.resolv_conf = Some("nameserver 192.0.2.53\n".into());
    let open = plan(
        &policy(PolicySpec::default()),
        &with,
        &[],
        Flavour::Namespaces,
    );
    assert!(open.steps.contains(&Step::File {
        path: "/etc/resolv.conf".into(),
        contents: "nameserver 192.0.2.53\n".into(),
        mode: 0o644,
    }));
}
