//! What the guest may see: its argv, its environment, its preopened directories, the process's
//! stdio — turned into a WASI context. Everything else is denied here: no inherited environment
//! or arguments, no preopen but the given ones, no socket of any kind. This module must never
//! widen what a `WasmRun` grants.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::error::{one_line, WasmError};
use crate::{Preopen, WasmRun};

/// A WASI context builder that grants `run`'s argv, environment (with `PWD` from `run.cwd`),
/// preopens and the inherited stdio, and nothing else.
///
/// wasi-libc does not read `PWD`: it resolves a relative path against the preopen named `.`.
/// So with a cwd, that directory — opened beneath its preopen, never through a symlink that
/// leaves it — is also preopened as `.`, last, with its preopen's permissions.
pub(crate) fn wasi_builder(run: &WasmRun) -> Result<WasiCtxBuilder, WasmError> {
    check_strings(run)?;
    let cwd = match &run.cwd {
        Some(cwd) => Some(cwd_inside_preopens(cwd, &run.preopens)?),
        None => None,
    };
    let mut builder = WasiCtxBuilder::new();
    // Blocking WASI calls (open, read a file, a plain sleep) go through tokio's blocking pool,
    // never block the thread that runs the guest: so the deadline can always cut them. Must be
    // set before the preopens, which capture it.
    builder.allow_blocking_current_thread(false);
    builder.inherit_stdio();
    builder.args(&run.args);
    for (key, value) in &run.env {
        if cwd.is_none() || key != "PWD" {
            builder.env(key, value);
        }
    }
    // No network: every socket use is refused (the default address check already denies every
    // address; these also refuse creating TCP/UDP sockets and name lookups).
    builder.allow_tcp(false);
    builder.allow_udp(false);
    builder.allow_ip_name_lookup(false);
    for (index, preopen) in run.preopens.iter().enumerate() {
        check_guest_path(preopen, &run.preopens[..index])?;
        add_preopen(
            &mut builder,
            &preopen.host,
            &preopen.guest,
            preopen.writable,
        )?;
    }
    if let Some(cwd) = cwd {
        builder.env("PWD", &cwd.path);
        builder.initial_cwd(&cwd.path);
        let preopen = &run.preopens[cwd.preopen];
        if cwd.needs_dot_preopen {
            let dir =
                open_beneath(&preopen.host, &cwd.beneath).map_err(|reason| WasmError::Preopen {
                    guest: cwd.path.clone(),
                    reason: format!("cwd: {reason}"),
                })?;
            // The directory just opened, by its descriptor: nothing can swap it since.
            let host = format!("/proc/self/fd/{}", dir.as_raw_fd());
            add_preopen(&mut builder, Path::new(&host), ".", preopen.writable)?;
        }
    }
    Ok(builder)
}

fn add_preopen(
    builder: &mut WasiCtxBuilder,
    host: &Path,
    guest: &str,
    writable: bool,
) -> Result<(), WasmError> {
    let perms = if writable {
        FsPerms::ReadWrite
    } else {
        FsPerms::ReadOnly
    };
    builder
        .preopened_dir(host, guest, perms)
        .map_err(|err| WasmError::Preopen {
            guest: guest.to_owned(),
            reason: format!("cannot open {}: {}", host.display(), one_line(&err)),
        })?;
    Ok(())
}

/// The directory `beneath` inside `root`, resolved without ever leaving `root` (a symlink or
/// `..` that would is an error).
fn open_beneath(root: &Path, beneath: &[String]) -> Result<File, String> {
    let root = File::open(root).map_err(|err| format!("open {}: {err}", root.display()))?;
    let path: std::path::PathBuf = beneath.iter().collect();
    let path = if beneath.is_empty() {
        Path::new(".")
    } else {
        path.as_path()
    };
    cap_primitives::fs::open_dir(&root, path)
        .map_err(|err| format!("{} inside its preopen: {err}", path.display()))
}

/// Arguments and environment become C strings in the guest: no NUL anywhere, no `=` in a name.
fn check_strings(run: &WasmRun) -> Result<(), WasmError> {
    if let Some(arg) = run.args.iter().find(|arg| arg.contains('\0')) {
        return Err(WasmError::Setup(format!("argument {arg:?} contains NUL")));
    }
    for (key, value) in &run.env {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(WasmError::Setup(format!(
                "invalid environment variable name {key:?}"
            )));
        }
        if value.contains('\0') {
            return Err(WasmError::Setup(format!(
                "environment variable {key} contains NUL"
            )));
        }
    }
    Ok(())
}

/// A guest path as its components, `.` dropped; `None` if it has a `..` (or a NUL).
fn components(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    let clean = parts
        .iter()
        .all(|part| *part != ".." && !part.contains('\0'));
    clean.then_some(parts)
}

/// A preopen's guest path must be non-empty, free of `..`, and not given twice.
fn check_guest_path(preopen: &Preopen, earlier: &[Preopen]) -> Result<(), WasmError> {
    let reason = if preopen.guest.is_empty() {
        Some("empty guest path")
    } else if components(&preopen.guest).is_none() {
        Some("guest path must not contain `..` or NUL")
    } else if earlier
        .iter()
        .any(|other| same_guest_path(&other.guest, &preopen.guest))
    {
        Some("guest path given twice")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(WasmError::Preopen {
            guest: preopen.guest.clone(),
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

fn same_guest_path(a: &str, b: &str) -> bool {
    a.starts_with('/') == b.starts_with('/') && components(a) == components(b)
}

/// A cwd inside a preopen.
#[derive(Debug, PartialEq, Eq)]
struct Cwd {
    /// Normalized guest path.
    path: String,
    /// Index of the innermost preopen holding it.
    preopen: usize,
    /// Its components below that preopen's guest path.
    beneath: Vec<String>,
    /// Whether no preopen is named `.` already.
    needs_dot_preopen: bool,
}

/// `cwd`, normalized, if it lies inside (or is) one of the preopens' guest paths.
fn cwd_inside_preopens(cwd: &str, preopens: &[Preopen]) -> Result<Cwd, WasmError> {
    let refuse = |reason: &str| WasmError::Preopen {
        guest: cwd.to_owned(),
        reason: reason.to_owned(),
    };
    let parts = components(cwd).ok_or_else(|| refuse("cwd must not contain `..` or NUL"))?;
    let absolute = cwd.starts_with('/');
    let innermost = preopens
        .iter()
        .enumerate()
        .filter(|(_, preopen)| preopen.guest.starts_with('/') == absolute)
        .filter_map(|(index, preopen)| Some((index, components(&preopen.guest)?)))
        .filter(|(_, root)| parts.starts_with(root))
        .max_by_key(|(_, root)| root.len());
    let Some((preopen, root)) = innermost else {
        return Err(refuse("cwd is not inside any preopen"));
    };
    let path = match (absolute, parts.is_empty()) {
        (true, _) => format!("/{}", parts.join("/")),
        (false, true) => ".".to_owned(),
        (false, false) => parts.join("/"),
    };
    Ok(Cwd {
        path,
        preopen,
        beneath: parts[root.len()..]
            .iter()
            .map(|part| (*part).to_owned())
            .collect(),
        needs_dot_preopen: !preopens.iter().any(|p| same_guest_path(&p.guest, ".")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn preopen(guest: &str) -> Preopen {
        Preopen {
            host: "/nonexistent".into(),
            guest: guest.to_owned(),
            writable: false,
        }
    }

    #[test]
    fn cwd_must_be_inside_a_preopen() {
        let preopens = [preopen("/work"), preopen("/data/in")];
        let path = |cwd: &str| cwd_inside_preopens(cwd, &preopens).unwrap().path;
        assert_eq!(path("/work"), "/work");
        assert_eq!(path("/work/./a//b/"), "/work/a/b");
        assert_eq!(path("/data/in/x"), "/data/in/x");
        for outside in ["/", "/data", "/workspace", "work", "/work/../etc", "/tmp"] {
            let err = cwd_inside_preopens(outside, &preopens).unwrap_err();
            assert!(matches!(err, WasmError::Preopen { .. }), "{outside}: {err}");
        }
        assert!(cwd_inside_preopens("/work", &[]).is_err());
    }

    #[test]
    fn a_root_preopen_holds_every_absolute_cwd() {
        let cwd = cwd_inside_preopens("/a/b", &[preopen("/")]).unwrap();
        assert_eq!((cwd.path.as_str(), cwd.beneath.len()), ("/a/b", 2));
        assert!(cwd.needs_dot_preopen);
        let cwd = cwd_inside_preopens("sub", &[preopen(".")]).unwrap();
        assert_eq!(cwd.path, "sub");
        assert!(!cwd.needs_dot_preopen);
        assert_eq!(cwd_inside_preopens(".", &[preopen(".")]).unwrap().path, ".");
    }

    #[test]
    fn the_innermost_preopen_holds_the_cwd() {
        let preopens = [preopen("/"), preopen("/work"), preopen("/work/sub")];
        let cwd = cwd_inside_preopens("/work/sub/x", &preopens).unwrap();
        assert_eq!(cwd.preopen, 2);
        assert_eq!(cwd.beneath, ["x"]);
    }

    #[test]
    fn the_cwd_never_leaves_its_preopen_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        assert!(open_beneath(root.path(), &["sub".to_owned()]).is_ok());
        assert!(open_beneath(root.path(), &[]).is_ok());
        assert!(open_beneath(root.path(), &["link".to_owned()]).is_err());
        assert!(open_beneath(root.path(), &["missing".to_owned()]).is_err());
    }

    #[test]
    fn guest_paths_are_checked() {
        assert!(check_guest_path(&preopen("/work"), &[]).is_ok());
        assert!(check_guest_path(&preopen(""), &[]).is_err());
        assert!(check_guest_path(&preopen("/work/../etc"), &[]).is_err());
        assert!(check_guest_path(&preopen("/work/"), &[preopen("/work")]).is_err());
        assert!(check_guest_path(&preopen("work"), &[preopen("/work")]).is_ok());
    }

    #[test]
    fn a_missing_host_dir_is_a_preopen_error() {
        let run = WasmRun {
            module: "m.wasm".into(),
            args: vec![],
            env: vec![],
            preopens: vec![preopen("/work")],
            cwd: None,
            memory_limit: 1 << 20,
            timeout: None,
            fuel: None,
            cache_dir: None,
        };
        let Err(WasmError::Preopen { guest, reason }) = wasi_builder(&run) else {
            panic!("expected a preopen error");
        };
        assert_eq!(guest, "/work");
        assert!(reason.contains("/nonexistent"), "{reason}");
    }

    #[test]
    fn env_names_and_nul_are_checked() {
        let mut run = WasmRun {
            module: "m.wasm".into(),
            args: vec!["a\0b".into()],
            env: vec![],
            preopens: vec![],
            cwd: None,
            memory_limit: 1 << 20,
            timeout: None,
            fuel: None,
            cache_dir: None,
        };
        assert!(matches!(check_strings(&run), Err(WasmError::Setup(_))));
        run.args = vec!["prog".into()];
        run.env = vec![("A=B".into(), "c".into())];
        assert!(matches!(check_strings(&run), Err(WasmError::Setup(_))));
        run.env = vec![("A".into(), "c\0".into())];
        assert!(matches!(check_strings(&run), Err(WasmError::Setup(_))));
        run.env = vec![("A".into(), "b=c".into())];
        assert!(check_strings(&run).is_ok());
    }
}
