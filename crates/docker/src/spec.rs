//! A [`Sandbox`] as a Docker container configuration: a pure function, so the whole mapping is
//! unit-tested without a daemon. It never weakens the description: what Docker cannot express
//! (a relative or root mount target, a non-UTF-8 path) is refused.

use std::collections::HashMap;
use std::path::Path;

use agentbox_oci::{EngineError, Sandbox};
use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountTypeEnum, ResourcesUlimits,
};

use crate::ENGINE;

/// Whether the container's stdin is attached (a one-shot run) or not (a persistent sandbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    Attached,
    Closed,
}

/// The container configuration of `sandbox` on image `image` with seccomp profile `seccomp`.
pub fn container_body(
    sandbox: &Sandbox,
    image: &str,
    seccomp: &serde_json::Value,
    stdin: Stdin,
) -> Result<ContainerCreateBody, EngineError> {
    let limits = &sandbox.limits;
    let mut mounts = Vec::new();
    for bind in &sandbox.binds {
        mounts.push(Mount {
            target: Some(target(&bind.target)?),
            source: Some(utf8("binds", &bind.source)?),
            typ: Some(MountTypeEnum::BIND),
            read_only: Some(!bind.writable),
            bind_options: Some(MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                // Docker 20.10 makes only the top mount of a bind read-only: a read-only bind
                // leaves the source's submounts out instead of letting them show writable.
                non_recursive: Some(!bind.writable),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut tmpfs = HashMap::new();
    for t in &sandbox.tmpfs {
        tmpfs.insert(
            target(&t.target)?,
            format!("rw,nosuid,nodev,exec,size={},mode={:o}", t.size, t.mode),
        );
    }
    let taken =
        |p: &str| tmpfs.contains_key(p) || sandbox.binds.iter().any(|b| b.target == Path::new(p));
    if !taken("/tmp") {
        let size = limits
            .disk
            .map(|d| format!(",size={d}"))
            .unwrap_or_default();
        tmpfs.insert(
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,exec,mode=1777{size}"),
        );
    }
    let nofile = limits
        .nofile
        .map(|n| {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            vec![ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(n),
                hard: Some(n),
            }]
        })
        .unwrap_or_default();
    let memory = limits.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX));
    let host_config = HostConfig {
        mounts: Some(mounts),
        tmpfs: Some(tmpfs),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(Vec::new()),
        security_opt: Some(vec![
            "no-new-privileges".into(),
            format!("seccomp={seccomp}"),
        ]),
        network_mode: Some("none".into()),
        pids_limit: limits.pids.map(|p| i64::try_from(p).unwrap_or(i64::MAX)),
        memory,
        memory_swap: memory,
        nano_cpus: limits.cpus_milli.map(|m| i64::from(m) * 1_000_000),
        ulimits: Some(nofile),
        shm_size: limits.disk.map(|d| i64::try_from(d).unwrap_or(i64::MAX)),
        init: Some(false),
        auto_remove: Some(false),
        privileged: Some(false),
        ipc_mode: Some("private".into()),
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        ..Default::default()
    };
    let attached = stdin == Stdin::Attached;
    Ok(ContainerCreateBody {
        image: Some(image.into()),
        cmd: Some(sandbox.argv.clone()),
        entrypoint: Some(Vec::new()),
        env: Some(
            sandbox
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        working_dir: Some(utf8("cwd", &sandbox.cwd)?),
        user: Some(format!("{}:{}", sandbox.uid, sandbox.uid)),
        hostname: Some(sandbox.hostname.clone()),
        tty: Some(false),
        open_stdin: Some(attached),
        stdin_once: Some(attached),
        attach_stdin: Some(attached),
        attach_stdout: Some(attached),
        attach_stderr: Some(attached),
        host_config: Some(host_config),
        ..Default::default()
    })
}

fn utf8(what: &str, path: &Path) -> Result<String, EngineError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| EngineError::Unenforceable {
            engine: ENGINE,
            field: "mounts",
            reason: format!("{what} {}: Docker takes UTF-8 paths only", path.display()),
        })
}

fn target(path: &Path) -> Result<String, EngineError> {
    if !path.is_absolute() || path == Path::new("/") {
        return Err(EngineError::Unenforceable {
            engine: ENGINE,
            field: "mounts",
            reason: format!(
                "mount target {}: Docker mounts on absolute paths other than /",
                path.display()
            ),
        });
    }
    utf8("mount target", path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use agentbox_oci::{Bind, Limits, Tmpfs};
    use std::path::PathBuf;
    use std::time::Duration;

    pub(crate) fn sandbox() -> Sandbox {
        Sandbox {
            id: "agentbox-0123456789ab".into(),
            rootfs: PathBuf::from("/nonexistent"),
            image: None,
            symlinks: vec![(PathBuf::from("/bin"), PathBuf::from("usr/bin"))],
            binds: vec![
                Bind {
                    source: PathBuf::from("/usr"),
                    target: PathBuf::from("/usr"),
                    writable: false,
                },
                Bind {
                    source: PathBuf::from("/srv/ws"),
                    target: PathBuf::from("/workspace"),
                    writable: true,
                },
            ],
            tmpfs: vec![Tmpfs {
                target: PathBuf::from("/scratch"),
                size: 1 << 20,
                mode: 0o700,
            }],
            argv: vec!["/bin/true".into()],
            env: vec![("PATH".into(), "/usr/bin".into())],
            cwd: PathBuf::from("/workspace"),
            uid: 1000,
            uid_range: None,
            hostname: "agentbox".into(),
            limits: Limits {
                memory: Some(64 << 20),
                cpus_milli: Some(500),
                pids: Some(32),
                nofile: Some(128),
                disk: Some(8 << 20),
                timeout: Some(Duration::from_secs(1)),
            },
            seccomp: agentbox_seccomp::default_allowlist().unwrap(),
            state_dir: PathBuf::from("/nonexistent"),
            oci_runtime: None,
        }
    }

    #[test]
    fn every_field_maps_to_the_container() {
        let body = container_body(
            &sandbox(),
            "agentbox/host:1",
            &serde_json::json!({}),
            Stdin::Attached,
        )
        .unwrap();
        let host = body.host_config.clone().unwrap();
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(32));
        let tmpfs = host.tmpfs.unwrap();
        assert_eq!(
            tmpfs["/tmp"],
            format!("rw,nosuid,nodev,exec,mode=1777,size={}", 8 << 20)
        );
        assert_eq!(
            tmpfs["/scratch"],
            "rw,nosuid,nodev,exec,size=1048576,mode=700"
        );
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(
            mounts[0].bind_options.as_ref().unwrap().non_recursive,
            Some(true)
        );
        assert_eq!(mounts[1].read_only, Some(false));
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.env, Some(vec!["PATH=/usr/bin".to_string()]));
        assert_eq!(body.working_dir.as_deref(), Some("/workspace"));
        assert!(host.security_opt.unwrap()[1].starts_with("seccomp={"));
    }

    #[test]
    fn mounts_docker_cannot_express_are_refused() {
        let mut s = sandbox();
        s.binds[1].target = PathBuf::from("/");
        let err = container_body(&s, "i", &serde_json::json!({}), Stdin::Closed).unwrap_err();
        assert!(matches!(
            err,
            EngineError::Unenforceable {
                field: "mounts",
                ..
            }
        ));
    }
}
