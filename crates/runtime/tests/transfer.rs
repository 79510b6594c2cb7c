//! `agentbox cp`'s transfer core against the real kernel, as root: a plain temporary directory plays
//! the sandbox's root. The escape tests plant the symlinks a hostile sandbox would (`/`, `../../..`,
//! `/etc`, a directory swapped for a symlink in a tight loop) and decide on the host side, with
//! canary files, that nothing outside the root was read or written.

// Helpers outside `#[test]` functions set up fixtures; a failed step should fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use agentbox_runtime::transfer::{
    copy_in, copy_out, open_root, Location, TransferError, MAX_DEPTH,
};
use agentbox_sys::resolve::{self, OpenFlags};

const OWNER: (u32, u32) = (1234, 1234);

/// `dir` opened the way `open_root` opens a sandbox's root.
fn root_fd(dir: &Path) -> OwnedFd {
    resolve::open(dir, OpenFlags::PATH.directory(), 0).unwrap()
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn owner_of(path: &Path) -> (u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.uid(), meta.gid())
}

fn absent(path: &Path) -> bool {
    matches!(fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// Every name under `dir` (not following symlinks) that starts with the copier's temporary prefix.
fn leftover_temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".agentbox-cp-")
        {
            found.push(path.clone());
        }
        if entry.file_type().unwrap().is_dir() {
            found.extend(leftover_temporaries(&path));
        }
    }
    found
}

/// Host paths outside any temporary directory that a test plants or that an escape would create:
/// removed however the test ends.
struct HostFiles(Vec<PathBuf>);

impl Drop for HostFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

#[test]
fn a_tree_round_trips_with_contents_modes_and_owner() {
    let host = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let src = host.path().join("src");
    fs::create_dir_all(src.join("sub/empty")).unwrap();
    fs::write(src.join("a.txt"), "alpha").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("sub/b.bin"), &big).unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\n").unwrap();
    symlink("../a.txt", src.join("sub/rel")).unwrap();
    set_mode(&src, 0o751);
    set_mode(&src.join("a.txt"), 0o640);
    set_mode(&src.join("sub"), 0o750);
    set_mode(&src.join("sub/b.bin"), 0o600);
    set_mode(&src.join("sub/empty"), 0o700);
    set_mode(&src.join("run.sh"), 0o755);
    let root = root_fd(sandbox.path());
    let total = 5 + big.len() as u64 + 10;

    let copied = copy_in(&root, &src, Path::new("/home/agent/tree"), OWNER).unwrap();
    assert_eq!(copied, total);
    let inside = sandbox.path().join("home/agent/tree");
    for parent in ["home", "home/agent"] {
        let parent = sandbox.path().join(parent);
        assert_eq!(owner_of(&parent), OWNER, "{}", parent.display());
        assert_eq!(mode_of(&parent), 0o755, "{}", parent.display());
    }
    let entries = [
        ("", 0o751),
        ("a.txt", 0o640),
        ("sub", 0o750),
        ("sub/b.bin", 0o600),
        ("sub/empty", 0o700),
        ("run.sh", 0o755),
    ];
    for (name, mode) in entries {
        let path = inside.join(name);
        assert_eq!(mode_of(&path), mode, "{}", path.display());
        assert_eq!(owner_of(&path), OWNER, "{}", path.display());
    }
    assert_eq!(fs::read(inside.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read(inside.join("sub/b.bin")).unwrap(), big);
    assert_eq!(
        fs::read_link(inside.join("sub/rel")).unwrap(),
        Path::new("../a.txt")
    );
    assert_eq!(owner_of(&inside.join("sub/rel")), OWNER);

    let out = host.path().join("out");
    let copied = copy_out(&root, Path::new("/home/agent/tree"), &out).unwrap();
    assert_eq!(copied, total);
    for (name, mode) in entries {
        let path = out.join(name);
        assert_eq!(mode_of(&path), mode, "{}", path.display());
        assert_eq!(owner_of(&path), (0, 0), "{}", path.display());
    }
    assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read(out.join("sub/b.bin")).unwrap(), big);
    assert_eq!(
        fs::read_link(out.join("sub/rel")).unwrap(),
        Path::new("../a.txt")
    );

    // Copying again replaces files and merges into the existing directories.
    fs::write(src.join("a.txt"), "beta!").unwrap();
    copy_in(&root, &src, Path::new("/home/agent/tree"), OWNER).unwrap();
    assert_eq!(fs::read(inside.join("a.txt")).unwrap(), b"beta!");

    assert_eq!(leftover_temporaries(sandbox.path()), Vec::<PathBuf>::new());
    assert_eq!(leftover_temporaries(host.path()), Vec::<PathBuf>::new());
}

#[test]
fn setuid_setgid_and_sticky_bits_never_cross() {
    let host = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let bin = sandbox.path().join("bin");
    fs::create_dir_all(bin.join("shared")).unwrap();
    fs::create_dir_all(bin.join("scratch")).unwrap();
    fs::write(bin.join("suid"), "#!/bin/sh\n").unwrap();
    set_mode(&bin.join("suid"), 0o4755);
    set_mode(&bin.join("shared"), 0o2775);
    set_mode(&bin.join("scratch"), 0o1777);
    let root = root_fd(sandbox.path());

    let out = host.path().join("bin");
    copy_out(&root, Path::new("/bin"), &out).unwrap();
    assert_eq!(mode_of(&out.join("suid")), 0o755);
    assert_eq!(mode_of(&out.join("shared")), 0o775);
    assert_eq!(mode_of(&out.join("scratch")), 0o777);
    copy_out(&root, Path::new("/bin/suid"), &host.path().join("single")).unwrap();
    assert_eq!(mode_of(&host.path().join("single")), 0o755);

    let host_suid = host.path().join("host-suid");
    fs::write(&host_suid, "x").unwrap();
    set_mode(&host_suid, 0o6755);
    copy_in(&root, &host_suid, Path::new("/bin/from-host"), OWNER).unwrap();
    assert_eq!(mode_of(&bin.join("from-host")), 0o755);
}

#[test]
fn symlinks_planted_in_the_root_resolve_inside_it() {
    let pid = std::process::id();
    let host = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let fake = "root:x:0:0:the sandbox's own passwd:/root:/bin/sh\n";
    fs::create_dir_all(sandbox.path().join("etc")).unwrap();
    fs::create_dir_all(sandbox.path().join("tmp")).unwrap();
    fs::write(sandbox.path().join("etc/passwd"), fake).unwrap();
    symlink("/", sandbox.path().join("link")).unwrap();
    symlink("../../..", sandbox.path().join("link2")).unwrap();
    symlink("/etc", sandbox.path().join("abs")).unwrap();
    let root = root_fd(sandbox.path());
    assert_ne!(fs::read_to_string("/etc/passwd").unwrap(), fake);

    for path in [
        "/link/etc/passwd",
        "/link2/etc/passwd",
        "/abs/passwd",
        "/link/link2/abs/passwd",
        "/../../../etc/passwd",
        "/tmp/../../../abs/../link2/etc/passwd",
    ] {
        let out = host.path().join("passwd");
        copy_out(&root, Path::new(path), &out).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), fake, "{path}");
    }

    let payload = host.path().join("payload");
    fs::write(&payload, "payload").unwrap();
    let names = [
        format!("x-{pid}"),
        format!("y-{pid}"),
        format!("z-{pid}"),
        format!("w-{pid}"),
    ];
    let _host_guard = HostFiles(
        names
            .iter()
            .flat_map(|n| [Path::new("/tmp").join(n), Path::new("/etc").join(n)])
            .collect(),
    );
    let targets = [
        (
            format!("/link/tmp/{}", names[0]),
            format!("tmp/{}", names[0]),
        ),
        (
            format!("/link2/tmp/{}", names[1]),
            format!("tmp/{}", names[1]),
        ),
        (
            format!("/abs/../tmp/{}", names[2]),
            format!("tmp/{}", names[2]),
        ),
        (format!("/abs/{}", names[3]), format!("etc/{}", names[3])),
    ];
    for (dst, inside) in &targets {
        copy_in(&root, &payload, Path::new(dst), OWNER).unwrap();
        let inside = sandbox.path().join(inside);
        assert_eq!(fs::read_to_string(&inside).unwrap(), "payload", "{dst}");
    }
    for name in &names {
        assert!(
            absent(&Path::new("/tmp").join(name)),
            "host /tmp/{name} was written"
        );
        assert!(
            absent(&Path::new("/etc").join(name)),
            "host /etc/{name} was written"
        );
    }
}

#[test]
fn magic_links_of_proc_are_refused() {
    // The host's own root as the "sandbox": /proc is mounted in it, as in a real sandbox.
    let root = open_root(std::process::id() as i32).unwrap();
    let host = tempfile::tempdir().unwrap();
    for path in [
        "/proc/self/root/etc/passwd",
        "/proc/thread-self/root/etc/passwd",
    ] {
        match copy_out(&root, Path::new(path), &host.path().join("out")) {
            Err(TransferError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc_eloop()), "{path}")
            }
            other => panic!("{path}: a magic link was followed: {other:?}"),
        }
    }
}

/// ELOOP, without a libc dependency in this crate's tests.
fn libc_eloop() -> i32 {
    agentbox_sys::resolve::errno::ELOOP
}

#[test]
fn open_root_of_this_process_is_a_usable_root() {
    let root = open_root(std::process::id() as i32).unwrap();
    let stat = resolve::fstat(&root).unwrap();
    let host_root = fs::metadata("/").unwrap();
    assert!(stat.is_dir());
    assert_eq!((stat.dev, stat.ino), (host_root.dev(), host_root.ino()));
    let host = tempfile::tempdir().unwrap();
    let out = host.path().join("passwd");
    let copied = copy_out(&root, Path::new("/etc/passwd"), &out).unwrap();
    let expected = fs::read("/etc/passwd").unwrap();
    assert_eq!(copied, expected.len() as u64);
    assert_eq!(fs::read(&out).unwrap(), expected);

    match open_root(i32::MAX) {
        Err(TransferError::NotFound(Location { path, .. })) => {
            assert_eq!(path, Path::new(&format!("/proc/{}/root", i32::MAX)))
        }
        other => panic!("the root of a process that does not exist: {other:?}"),
    }
}

#[test]
fn named_symlinks_are_copied_as_symlinks_and_never_followed() {
    let host = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    fs::create_dir(sandbox.path().join("etc")).unwrap();
    fs::write(sandbox.path().join("etc/passwd"), "inside").unwrap();
    symlink("/", sandbox.path().join("link")).unwrap();
    symlink("/etc/passwd", sandbox.path().join("pw")).unwrap();
    let root = root_fd(sandbox.path());

    // Out: the symlink itself, with its target as written; never the host file it names.
    let out = host.path().join("pw");
    assert_eq!(copy_out(&root, Path::new("/pw"), &out).unwrap(), 0);
    assert_eq!(fs::read_link(&out).unwrap(), Path::new("/etc/passwd"));
    // A whole root holding `link -> /` is copied once: the link is not walked into.
    let whole = host.path().join("whole");
    assert_eq!(copy_out(&root, Path::new("/"), &whole).unwrap(), 6);
    assert_eq!(fs::read_link(whole.join("link")).unwrap(), Path::new("/"));
    assert_eq!(
        fs::read_to_string(whole.join("etc/passwd")).unwrap(),
        "inside"
    );

    // In: a host symlink to the host's passwd becomes a symlink; the host file is not read.
    let host_link = host.path().join("host-pw");
    symlink("/etc/passwd", &host_link).unwrap();
    assert_eq!(
        copy_in(&root, &host_link, Path::new("/in-pw"), OWNER).unwrap(),
        0
    );
    let inside = sandbox.path().join("in-pw");
    assert_eq!(fs::read_link(&inside).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(owner_of(&inside), OWNER);
}

#[test]
fn an_existing_destination_symlink_is_replaced_not_written_through() {
    let host = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    fs::create_dir_all(sandbox.path().join("etc")).unwrap();
    fs::create_dir_all(sandbox.path().join("tmp")).unwrap();
    fs::write(sandbox.path().join("etc/passwd"), "inside").unwrap();
    symlink("/etc/passwd", sandbox.path().join("tmp/evil")).unwrap();
    let root = root_fd(sandbox.path());
    let payload = host.path().join("payload");
    fs::write(&payload, "payload").unwrap();

    copy_in(&root, &payload, Path::new("/tmp/evil"), OWNER).unwrap();
    assert_eq!(
        fs::read_to_string(sandbox.path().join("etc/passwd")).unwrap(),
        "inside"
    );
    let evil = sandbox.path().join("tmp/evil");
    assert!(fs::symlink_metadata(&evil).unwrap().is_file());
    assert_eq!(fs::read_to_string(&evil).unwrap(), "payload");

    // On the host: a symlink at the destination is replaced, its target untouched.
    let canary = host.path().join("canary");
    fs::write(&canary, "host canary").unwrap();
    let dst = host.path().join("dst");
    symlink(&canary, &dst).unwrap();
    copy_out(&root, Path::new("/etc/passwd"), &dst).unwrap();
    assert_eq!(fs::read_to_string(&canary).unwrap(), "host canary");
    assert_eq!(fs::read_to_string(&dst).unwrap(), "inside");
    assert!(fs::symlink_metadata(&dst).unwrap().is_file());

    // A directory where the copy needs one must not be a symlink.
    symlink("/etc", sandbox.path().join("tmp/dirlink")).unwrap();
    let tree = host.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("f"), "f").unwrap();
    match copy_in(&root, &tree, Path::new("/tmp/dirlink"), OWNER) {
        Err(TransferError::NotADirectory(at)) => assert_eq!(at, Location::sandbox("/tmp/dirlink")),
        other => panic!("a tree was merged through a symlink: {other:?}"),
    }
    assert!(absent(&sandbox.path().join("etc/f")));
}

#[test]
fn devices_fifos_and_sockets_are_refused() {
    let host = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let tree = host.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let _listener = UnixListener::bind(tree.join("sock")).unwrap();
    let root = root_fd(sandbox.path());
    for src in [tree.join("sock"), tree.clone()] {
        match copy_in(&root, &src, Path::new("/dst"), OWNER) {
            Err(TransferError::SpecialFile { path, kind }) => {
                assert_eq!(path, Location::host(tree.join("sock")));
                assert_eq!(kind, "socket");
            }
            other => panic!("{}: a socket was copied: {other:?}", src.display()),
        }
    }

    let _inside = UnixListener::bind(sandbox.path().join("sock")).unwrap();
    let err = copy_out(&root, Path::new("/sock"), &host.path().join("out")).unwrap_err();
    assert!(
        matches!(err, TransferError::SpecialFile { kind: "socket", .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("sandbox:/sock: refusing to copy a socket"),
        "{err}"
    );

    // The host's own root: /dev/null is a character device, never opened.
    let host_root = open_root(std::process::id() as i32).unwrap();
    let err = copy_out(
        &host_root,
        Path::new("/dev/null"),
        &host.path().join("null"),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::SpecialFile {
                kind: "character device",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn paths_that_name_nothing_are_refused() {
    let host = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let root = root_fd(sandbox.path());
    let file = host.path().join("f");
    fs::write(&file, "f").unwrap();
    assert!(matches!(
        copy_in(&root, &file, Path::new("tmp/f"), OWNER),
        Err(TransferError::RelativeSandboxPath(_))
    ));
    assert!(matches!(
        copy_out(&root, Path::new("etc/passwd"), &host.path().join("o")),
        Err(TransferError::RelativeSandboxPath(_))
    ));
    for dst in ["/", "/tmp/.."] {
        assert!(matches!(
            copy_in(&root, &file, Path::new(dst), OWNER),
            Err(TransferError::NoFileName(_))
        ));
    }
    match copy_out(&root, Path::new("/missing/file"), &host.path().join("o")) {
        Err(TransferError::NotFound(at)) => assert_eq!(at, Location::sandbox("/missing/file")),
        other => panic!("{other:?}"),
    }
    match copy_in(
        &root,
        &host.path().join("missing"),
        Path::new("/a/b/x"),
        OWNER,
    ) {
        Err(TransferError::NotFound(at)) => {
            assert_eq!(at, Location::host(host.path().join("missing")))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        absent(&sandbox.path().join("a")),
        "a failed copy created directories"
    );
}

#[test]
fn a_tree_deeper_than_the_limit_is_refused() {
    let host = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let mut deep = host.path().join("top");
    for _ in 0..=MAX_DEPTH {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    let root = root_fd(sandbox.path());
    let err = copy_in(&root, &host.path().join("top"), Path::new("/top"), OWNER).unwrap_err();
    assert!(matches!(err, TransferError::TooDeep(_)), "{err}");
}

/// A thread that swaps `<root>/d` with a symlink to `/` or to `../../..` (renameat2
/// RENAME_EXCHANGE, so `d` always exists as one or the other) until stopped; stopped and joined on
/// drop too, before the root's temporary directory is removed.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Swapper {
    fn start(top: &Path) -> Self {
        symlink("/", top.join("swap-abs")).unwrap();
        symlink("../../..", top.join("swap-rel")).unwrap();
        let dir = resolve::open(top, OpenFlags::DIRECTORY, 0).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // Each symlink is swapped in, then back out: after a multiple of two, `d` is the
            // directory again.
            const LINKS: [&str; 4] = ["swap-abs", "swap-abs", "swap-rel", "swap-rel"];
            let mut swaps = 0u64;
            while !(matches!(swaps % 4, 0 | 2) && stopped.load(Ordering::Relaxed)) {
                let link = LINKS[(swaps % 4) as usize];
                if resolve::rename_exchange(&dir, Path::new("d"), Path::new(link)).is_err() {
                    break;
                }
                swaps += 1;
            }
            swaps
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread; returns how many swaps it made.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |thread| thread.join().unwrap())
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The attack of the issue: a sandbox process swaps a directory on the copy's path for a symlink
/// to `/` (or `../../..`) as fast as it can while the host copies through it. Whichever the kernel
/// sees, the path must resolve inside the root: a host canary at the path an escape would reach
/// must be neither read nor written, and nothing new may appear beside it.
#[test]
fn swapping_a_directory_for_a_symlink_during_copies_never_reaches_the_host() {
    const ROUNDS: usize = 2000;
    const HOST_CONTENT: &str = "HOST CANARY: must never be read by a copy";
    const IN_D: &str = "root: /d/canary";
    const AT_TOP: &str = "root: /canary (through d -> / resolved inside the root)";
    let pid = std::process::id();
    let canary_name = format!("canary-{pid}");
    let written_name = format!("canary-{pid}-written");
    let canary = Path::new("/").join(&canary_name);
    let written = Path::new("/").join(&written_name);
    let _guard = HostFiles(vec![canary.clone(), written.clone()]);
    fs::write(&canary, HOST_CONTENT).unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(&canary)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let before = fs::metadata(&canary).unwrap();

    let host = tempfile::tempdir().unwrap();
    let sandbox = tempfile::tempdir().unwrap();
    let top = sandbox.path().to_path_buf();
    fs::create_dir(top.join("d")).unwrap();
    fs::write(top.join("d").join(&canary_name), IN_D).unwrap();
    fs::write(top.join(&canary_name), AT_TOP).unwrap();
    let payload = host.path().join("payload");
    fs::write(&payload, "written by copy_in").unwrap();
    let root = root_fd(&top);

    let swapper = Swapper::start(&top);

    let started = Instant::now();
    let src = PathBuf::from(format!("/d/{canary_name}"));
    let dst = PathBuf::from(format!("/d/{written_name}"));
    let (mut in_d, mut at_top, mut out_failed, mut in_ok, mut in_failed) = (0, 0, 0, 0, 0);
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..ROUNDS {
        let out = host.path().join(format!("out-{}", round % 4));
        match copy_out(&root, &src, &out) {
            Ok(_) => match fs::read_to_string(&out).unwrap().as_str() {
                IN_D => in_d += 1,
                AT_TOP => at_top += 1,
                other => panic!("round {round}: copy_out read {other:?}, not the root's file"),
            },
            Err(e) => {
                out_failed += 1;
                *failures.entry(format!("copy_out: {e}")).or_default() += 1;
            }
        }
        match copy_in(&root, &payload, &dst, OWNER) {
            Ok(_) => in_ok += 1,
            Err(e) => {
                in_failed += 1;
                *failures.entry(format!("copy_in: {e}")).or_default() += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    let swaps = swapper.finish();
    eprintln!(
        "{ROUNDS} rounds in {elapsed:?}, {swaps} swaps: copy_out read /d/canary {in_d}x, \
         /canary (via the symlink) {at_top}x, failed {out_failed}x; copy_in ok {in_ok}x, \
         failed {in_failed}x; failures: {failures:#?}"
    );

    // Nothing on the host outside the root was read or written.
    let after = fs::metadata(&canary).unwrap();
    assert_eq!(fs::read_to_string(&canary).unwrap(), HOST_CONTENT);
    assert_eq!(after.modified().unwrap(), mtime);
    assert_eq!((after.ino(), after.len()), (before.ino(), before.len()));
    assert!(
        absent(&written),
        "copy_in wrote the host's {}",
        written.display()
    );
    let stray: Vec<_> = fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".agentbox-cp-") || n.starts_with(&written_name))
        .collect();
    assert!(
        stray.is_empty(),
        "files appeared in the host's /: {stray:?}"
    );

    // The race was real: both resolutions of `d` were taken, and the copies mostly went through.
    assert!(swaps > 1000, "the swapper barely ran: {swaps} swaps");
    assert!(
        in_d > 0 && at_top > 0,
        "one side of the race never happened"
    );
    assert!(
        in_ok > ROUNDS / 2,
        "copy_in failed {in_failed} of {ROUNDS} times"
    );
    assert!(
        out_failed < ROUNDS / 2,
        "copy_out failed {out_failed} of {ROUNDS} times"
    );
    // What copy_in wrote is inside the root, at one of the two places `/d` resolved to.
    let inside = [top.join("d").join(&written_name), top.join(&written_name)];
    assert!(
        inside.iter().any(|p| p.exists()),
        "copy_in's files are missing"
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}
