//! Persistent microVMs through `agentbox create/exec/cp/rm`: one VM serves every check (boots
//! cost about a second under TCG), then a second one has its QEMU killed under a running command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Write;
use std::process::Stdio;

use common::busybox::VmTest;
use common::*;

fn exec(name: &str, command: &[&str]) -> std::process::Output {
    let mut args = vec!["exec", name, "--"];
    args.extend_from_slice(command);
    agentbox(&args).output().unwrap()
}

#[test]
fn a_persistent_microvm_runs_commands_moves_files_and_goes_without_a_trace() {
    let t = VmTest::new();
    let image = t.image.clone();
    let work = t.work.path();
    let name = "vm-persistent-test";
    let id = ok(agentbox(&[
        "create",
        "--tier",
        "microvm",
        "--image",
        image.to_str().unwrap(),
        "--name",
        name,
        "--env",
        "FROM_POLICY=yes",
    ])
    .output()
    .unwrap());
    assert_eq!(id.trim().len(), 12, "{id}");
    let listed = ok(agentbox(&["ls"]).output().unwrap());
    assert!(
        listed
            .lines()
            .any(|l| l.contains(name) && l.contains("microvm")),
        "{listed}"
    );
    assert_eq!(t.new_qemus().len(), 1);

    // The guest's own kernel; state lives on between commands; exit codes pass through.
    let out = ok(exec(name, &["uname", "-r"]));
    assert!(out.trim().ends_with("-agentbox"), "{out}");
    ok(exec(name, &["sh", "-c", "echo kept > /tmp/state"]));
    assert_eq!(ok(exec(name, &["cat", "/tmp/state"])), "kept\n");
    assert_eq!(exec(name, &["sh", "-c", "exit 9"]).status.code(), Some(9));
    let o = exec(name, &["/no/such/command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));

    // The policy's environment under the exec's, the exec's working directory, stdin.
    let o = agentbox(&[
        "exec",
        "-e",
        "FROM_EXEC=1",
        "--cwd",
        "/etc",
        name,
        "--",
        "sh",
        "-c",
        "echo $FROM_POLICY $FROM_EXEC; pwd",
    ])
    .output()
    .unwrap();
    assert_eq!(ok(o), "yes 1\n/etc\n");
    let mut child = agentbox(&["exec", "-i", name, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // More than one protocol data chunk (64 KiB), in both directions.
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    child.stdin.take().unwrap().write_all(&big).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.stdout.len(), big.len());
    assert!(o.stdout == big, "stdin came back altered");

    // Two commands at once over the one channel.
    let slow = agentbox(&["exec", name, "--", "sh", "-c", "sleep 1; echo slow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(ok(exec(name, &["echo", "fast"])), "fast\n");
    assert_eq!(stdout(&slow.wait_with_output().unwrap()), "slow\n");

    // A command's wall clock is 124, and the VM serves on.
    let o = agentbox(&["exec", "--timeout", "1s", name, "--", "sleep", "30"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert_eq!(ok(exec(name, &["echo", "alive"])), "alive\n");

    // Files in and out through the agent; the image never changes.
    let host_file = work.join("in.txt");
    fs::write(&host_file, "from the host\n").unwrap();
    let target = format!("{name}:/tmp/in.txt");
    ok(agentbox(&["cp", host_file.to_str().unwrap(), &target])
        .output()
        .unwrap());
    assert_eq!(ok(exec(name, &["cat", "/tmp/in.txt"])), "from the host\n");
    ok(exec(name, &["sh", "-c", "echo guest > /etc/marker"]));
    let back = work.join("out.txt");
    ok(
        agentbox(&["cp", &format!("{name}:/etc/marker"), back.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert_eq!(fs::read_to_string(&back).unwrap(), "guest\n");
    assert_eq!(
        fs::read_to_string(image.join("etc/marker")).unwrap(),
        "from the image\n",
        "a guest write reached the image"
    );
    // A missing guest file is bad input and leaves no host file; a tree is refused by name.
    let missing = work.join("missing.txt");
    let o = agentbox(&["cp", &format!("{name}:/no/such"), missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(!missing.exists());
    let o = agentbox(&["cp", work.to_str().unwrap(), &format!("{name}:/tmp/x")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(123), "{}", stderr(&o));
    assert!(stderr(&o).contains("files"), "{}", stderr(&o));
    // A terminal is refused, not faked.
    let o = agentbox(&["exec", "-t", name, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));

    ok(agentbox(&["rm", name]).output().unwrap());
    assert!(!ok(agentbox(&["ls"]).output().unwrap()).contains(name));
    t.assert_nothing_left();
}

#[test]
fn a_killed_qemu_fails_the_running_command_and_the_sandbox_goes() {
    let t = VmTest::new();
    let image = t.image.clone();
    let name = "vm-killed-test";
    ok(agentbox(&[
        "create",
        "--tier",
        "microvm",
        "--image",
        image.to_str().unwrap(),
        "--name",
        name,
    ])
    .output()
    .unwrap());
    let ours = t.new_qemus();
    assert_eq!(ours.len(), 1);
    let running = agentbox(&["exec", name, "--", "sleep", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::process::Command::new("kill")
        .args(["-9", &ours[0].to_string()])
        .status()
        .unwrap();
    let o = running.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(123), "{}", stderr(&o));
    assert!(stderr(&o).contains("VM died"), "{}", stderr(&o));
    // The supervisor tears the sandbox down by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while ok(agentbox(&["ls"]).output().unwrap()).contains(name) {
        assert!(std::time::Instant::now() < deadline, "the sandbox stayed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    t.assert_nothing_left();
}
