#!/usr/bin/env bash
# Smoke test of the microvm guest kernel (scripts/build-guest-kernel.sh): boots it under QEMU
# `-M microvm` with TCG and a tiny initramfs whose /init is a static C program, and checks that
#   - /init runs; the time from starting QEMU to its marker line is printed,
#   - `uname -r` inside differs from the host's,
#   - the virtio-serial port /dev/vport0p1 exists, and a line goes guest -> host -> guest over it
#     (host side: QEMU's unix socket),
#   - the guest sees 2 CPUs (-smp 2 without ACPI: MP table), has Landlock, seccomp, no io_uring /
#     bpf(2); mounts a virtio-blk /dev/vda as ext4 (made by the host's mkfs.ext4) and an overlay of
#     it with a tmpfs upper (whiteouts, opaque dir),
#   - `reboot -f` (reboot(RB_AUTOBOOT)) makes QEMU exit.
#
#   scripts/guest-kernel-smoke.sh [path/to/vmlinux]   (default: <cache>/current/vmlinux)
set -euo pipefail

prog=guest-kernel-smoke
die() { echo "$prog: error: $*" >&2; exit 1; }

cache=${AGENTBOX_KERNEL_CACHE:-/var/cache/agentbox/kernel}
kernel=${1:-$cache/current/vmlinux}
[[ -f $kernel ]] || die "no kernel at $kernel: run scripts/build-guest-kernel.sh first"
for tool in qemu-system-x86_64 gcc cpio python3 mkfs.ext4; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install qemu-system-x86 build-essential cpio python3 e2fsprogs)"
done

work=$(mktemp -d /tmp/agentbox-kernel-smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT

cat >"$work/init.c" <<'EOF'
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

static void out(const char *s) { fputs(s, stdout); fflush(stdout); }

int main(void) {
    char buf[256];
    struct utsname u;
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mount("proc", "/proc", "proc", 0, NULL);
    uname(&u);
    out("AGENTBOX-SMOKE-MARKER\n");
    FILE *up = fopen("/proc/uptime", "r");
    if (up && fgets(buf, sizeof buf, up)) printf("SMOKE uptime=%s", buf);
    printf("SMOKE uname=%s\n", u.release);
    printf("SMOKE cpus=%ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    DIR *d = opendir("/dev");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "vport", 5)) printf("SMOKE vport=/dev/%s\n", e->d_name);
    printf("SMOKE landlock_abi=%ld\n", syscall(444 /* landlock_create_ruleset */, NULL, 0, 1));
    printf("SMOKE seccomp_mode=%d\n", prctl(PR_GET_SECCOMP));
    long r = syscall(425 /* io_uring_setup */, 1, NULL);
    printf("SMOKE io_uring=%s\n", r < 0 && errno == ENOSYS ? "ENOSYS" : "present");
    r = syscall(321 /* bpf */, 0, NULL, 0);
    printf("SMOKE bpf=%s\n", r < 0 && errno == ENOSYS ? "ENOSYS" : "present");
    /* the root disk: /dev/vda, ext4 made by the host's mkfs.ext4, read-only */
    mkdir("/vda", 0755);
    int ok = mount("/dev/vda", "/vda", "ext4", MS_RDONLY, NULL) == 0;
    FILE *h = ok ? fopen("/vda/dir/hello", "r") : NULL;
    printf("SMOKE vda_ext4=%s\n", !ok ? strerror(errno) : h && fgets(buf, sizeof buf, h) ? strtok(buf, "\n") : "no file");
    /* overlay: the disk as lower layer, a tmpfs upper (needs xattrs on tmpfs) */
    ok = ok && mount("tmpfs", "/t", "tmpfs", 0, NULL) == 0 && mkdir("/t/u", 0755) == 0 &&
         mkdir("/t/w", 0755) == 0 && mkdir("/t/m", 0755) == 0 &&
         mount("overlay", "/t/m", "overlay", 0, "lowerdir=/vda,upperdir=/t/u,workdir=/t/w") == 0 &&
         unlink("/t/m/dir/hello") == 0 && rmdir("/t/m/dir") == 0 && /* whiteouts */
         mkdir("/t/m/dir", 0755) == 0 && access("/t/m/dir/hello", F_OK) != 0; /* opaque dir (xattr) */
    printf("SMOKE overlay_on_tmpfs=%s\n", ok ? "ok" : strerror(errno));
    fflush(stdout);
    int fd = open("/dev/vport0p1", O_RDWR);
    if (fd < 0) {
        printf("SMOKE port_error=%s\n", strerror(errno));
    } else {
        int n = snprintf(buf, sizeof buf, "hello-from-guest %s\n", u.release);
        if (write(fd, buf, n) != n) printf("SMOKE port_error=write %s\n", strerror(errno));
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) == 1 && (n = read(fd, buf, sizeof buf - 1)) > 0) {
            buf[n] = 0;
            printf("SMOKE port_reply=%s", buf);
        } else {
            printf("SMOKE port_error=no reply\n");
        }
    }
    out("SMOKE done\n");
    sync();
    reboot(RB_AUTOBOOT);
    return 1;
}
EOF
mkdir -p "$work/root/dev" "$work/root/proc" "$work/root/sys" "$work/root/t"
gcc -static -O2 -o "$work/root/init" "$work/init.c" || die "cannot compile the test /init"
(cd "$work/root" && find . | cpio -o -H newc --quiet >"$work/initramfs.cpio") || die "cannot build the initramfs"
mkdir -p "$work/disk/dir" && echo "hello-from-vda" >"$work/disk/dir/hello"
mkfs.ext4 -q -F -d "$work/disk" "$work/vda.ext4" 8M >/dev/null || die "cannot make the ext4 test disk"

python3 - "$kernel" "$work/initramfs.cpio" "$work/agent.sock" "$work/vda.ext4" <<'EOF'
import os, socket, subprocess, sys, threading, time

kernel, initrd, sock_path, disk = sys.argv[1:5]
cmdline = ("console=ttyS0 quiet panic=-1 reboot=t tsc=reliable no_timer_check noapictimer "
           "lpj=8400000 8250.nr_uarts=1 random.trust_cpu=1")
argv = ["qemu-system-x86_64",
        "-M", "microvm,x-option-roms=off,isa-serial=on,acpi=off,rtc=on",
        "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "256M",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", kernel, "-initrd", initrd, "-append", cmdline, "-serial", "stdio",
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=agent,path={sock_path},server=on,wait=off",
        "-device", "virtserialport,chardev=agent,name=agent",
        "-drive", f"file={disk},if=none,id=vda,format=raw",
        "-device", "virtio-blk-device,drive=vda"]

t0 = time.monotonic()
qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
timer = threading.Timer(25, qemu.kill)
timer.start()

host_got = []
def host_side():
    # Connect as soon as QEMU has created the socket, answer the guest's line.
    while qemu.poll() is None:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock_path)
            break
        except OSError:
            s.close()
            time.sleep(0.01)
    else:
        return
    f = s.makefile("rb")
    line = f.readline().decode(errors="replace").strip()
    if line:
        host_got.append(line)
        s.sendall(b"ack-from-host\n")
    time.sleep(5)
threading.Thread(target=host_side, daemon=True).start()

facts, t_marker, console = {}, None, []
for raw in qemu.stdout:
    line = raw.decode(errors="replace").rstrip("\r\n")
    console.append(line)
    if "AGENTBOX-SMOKE-MARKER" in line and t_marker is None:
        t_marker = time.monotonic() - t0
    elif line.startswith("SMOKE "):
        k, _, v = line[6:].partition("=")
        facts.setdefault(k, []).append(v)
rc = qemu.wait()
timer.cancel()
t_exit = time.monotonic() - t0

def fact(k):
    return facts.get(k, [""])[0]
host_release = os.uname().release
checks = [
    ("/init ran (marker seen)", t_marker is not None),
    (f"uname -r in guest ({fact('uname')}) differs from host ({host_release})",
     fact("uname") not in ("", host_release)),
    ("/dev/vport0p1 exists", "/dev/vport0p1" in facts.get("vport", [])),
    (f"host read from the agent socket: {host_got[0] if host_got else '(nothing)'}",
     bool(host_got) and host_got[0].startswith("hello-from-guest")),
    ("guest read the host's reply on /dev/vport0p1", fact("port_reply") == "ack-from-host"),
    (f"2 CPUs online (got {fact('cpus')})", fact("cpus") == "2"),
    (f"Landlock enabled (ABI {fact('landlock_abi')})", fact("landlock_abi") not in ("", "-1")),
    ("seccomp available", fact("seccomp_mode") == "0"),
    ("io_uring and bpf(2) absent", fact("io_uring") == "ENOSYS" and fact("bpf") == "ENOSYS"),
    (f"/dev/vda (virtio-blk) mounts as ext4: {fact('vda_ext4')}", fact("vda_ext4") == "hello-from-vda"),
    (f"overlayfs: the disk + a tmpfs upper, whiteouts, opaque dir ({fact('overlay_on_tmpfs')})", fact("overlay_on_tmpfs") == "ok"),
    ("guest rebooted and QEMU exited by itself", "done" in facts and rc == 0 and t_exit < 25),
]
failed = [name for name, ok in checks if not ok]
for name, ok in checks:
    print(f"{'ok  ' if ok else 'FAIL'} {name}")
if t_marker is not None:
    print(f"boot to marker: {t_marker:.2f} s (QEMU start -> /init output; guest uptime at marker "
          f"{fact('uptime').split(' ')[0]} s); QEMU exited after {t_exit:.2f} s")
if failed:
    print("--- guest console ---", *console[-40:], sep="\n", file=sys.stderr)
    sys.exit(f"guest-kernel-smoke: error: {len(failed)} check(s) failed")
EOF
