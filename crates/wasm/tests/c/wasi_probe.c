/* A WASI program that attacks its own sandbox and reports each attempt, one line each:
 * "denied ..." for a refused attempt, "ESCAPED ..." for one that got through. The verdict is
 * the host's (tests/escape.rs): it checks the lines, the exit code and the host files.
 *
 *   escape <host path of the secret> [cwd]
 *                                     reads and writes outside the preopens; exit = escapes.
 *                                     With `cwd` (the cwd is preopened as "."), wasi-libc
 *                                     resolves "/x" to "./x": those probes only report, and
 *                                     the host checks where their writes landed.
 *   write                             writes into /work (rw) and attacks /ro (ro); exit = failures
 *   stdin                             echoes stdin with its length
 *   cwd                               reads and writes relative paths
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int escapes = 0;
static int failures = 0;

static void escaped(const char *what, const char *path) {
    printf("ESCAPED %s %s\n", what, path);
    escapes++;
}

static void denied(const char *what, const char *path) {
    printf("denied %s %s: %s\n", what, path, strerror(errno));
}

static void try_read(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        denied("read", path);
        return;
    }
    char buf[128];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
    escaped("read", path);
    printf("  content: %s\n", buf);
}

static void try_write(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        denied("write", path);
        return;
    }
    ssize_t n = write(fd, "pwned", 5);
    close(fd);
    escaped("write", path);
    printf("  wrote %zd bytes\n", n);
}

static void try_list(const char *path) {
    DIR *dir = opendir(path);
    if (dir == NULL) {
        denied("list", path);
        return;
    }
    closedir(dir);
    escaped("list", path);
}

static void try_sockets(void) {
    for (int fd = 0; fd < 8; fd++) {
        char buf[4];
        if (accept(fd, NULL, NULL) >= 0) escaped("accept", "fd");
        else if (recv(fd, buf, sizeof buf, 0) >= 0 && fd > 2) escaped("recv", "fd");
        else if (send(fd, "x", 1, 0) >= 0) escaped("send", "fd");
        else if (shutdown(fd, SHUT_RDWR) == 0) escaped("shutdown", "fd");
        else denied("socket calls on fd", fd == 0 ? "0" : "n");
    }
}

static int escape(const char *host_secret, int root_is_cwd) {
    try_read("../secret");
    try_read("/work/../secret");
    try_read("/work/../../../../../etc/passwd");
    try_read("/etc/passwd");
    try_read(host_secret);
    try_read("/work/link/secret");
    try_read("/work/filelink");
    try_read("/work/dotdot/secret");
    try_write("/work/link/planted");
    try_write("/work/filelink");
    try_write("/work/dotdot/planted");
    if (root_is_cwd) {
        int fd = open("/planted", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        printf("aliased write /planted: %s\n", fd >= 0 ? "created" : strerror(errno));
        if (fd >= 0) close(fd);
    } else {
        try_write("/planted");
        try_list("/");
    }
    try_write("../planted");
    try_list("/work/link");
    try_list("/work/dotdot");
    try_list("/work/..");
    if (symlink("/etc", "/work/etc-link") == 0) {
        try_read("/work/etc-link/passwd");
        try_list("/work/etc-link");
    } else {
        denied("symlink", "/work/etc-link");
    }
    try_sockets();
    return escapes;
}

static void must(int ok, const char *what) {
    if (ok) {
        printf("ok %s\n", what);
    } else {
        printf("FAILED %s: %s\n", what, strerror(errno));
        failures++;
    }
}

static int write_mode(void) {
    FILE *out = fopen("/work/out.txt", "w");
    must(out != NULL && fputs("written by wasm\n", out) >= 0 && fclose(out) == 0, "write /work/out.txt");
    must(mkdir("/work/newdir", 0755) == 0, "mkdir /work/newdir");
    FILE *in = fopen("/ro/existing.txt", "r");
    char buf[64] = {0};
    must(in != NULL && fgets(buf, sizeof buf, in) != NULL && strcmp(buf, "original\n") == 0,
         "read /ro/existing.txt");
    if (in != NULL) fclose(in);
    must(open("/ro/new.txt", O_WRONLY | O_CREAT, 0644) < 0, "refused create /ro/new.txt");
    must(open("/ro/existing.txt", O_WRONLY) < 0, "refused write-open /ro/existing.txt");
    must(open("/ro/existing.txt", O_RDWR) < 0, "refused rdwr-open /ro/existing.txt");
    must(open("/ro/existing.txt", O_WRONLY | O_TRUNC) < 0, "refused truncate /ro/existing.txt");
    must(unlink("/ro/existing.txt") != 0, "refused unlink /ro/existing.txt");
    must(mkdir("/ro/dir", 0755) != 0, "refused mkdir /ro/dir");
    must(rename("/ro/existing.txt", "/ro/moved.txt") != 0, "refused rename inside /ro");
    must(rename("/ro/existing.txt", "/work/stolen.txt") != 0, "refused rename out of /ro");
    must(symlink("existing.txt", "/ro/link") != 0, "refused symlink in /ro");
    return failures;
}

static int stdin_mode(void) {
    char buf[4096];
    size_t total = fread(buf, 1, sizeof buf - 1, stdin);
    buf[total] = 0;
    printf("stdin %zu bytes: %s", total, buf);
    return 0;
}

static int cwd_mode(void) {
    char buf[64] = {0};
    FILE *in = fopen("rel.txt", "r");
    must(in != NULL && fgets(buf, sizeof buf, in) != NULL, "read rel.txt");
    if (in != NULL) fclose(in);
    printf("rel.txt: %s", buf);
    FILE *out = fopen("made-here.txt", "w");
    must(out != NULL && fputs("relative\n", out) >= 0 && fclose(out) == 0, "write made-here.txt");
    const char *pwd = getenv("PWD");
    printf("PWD=%s\n", pwd ? pwd : "(unset)");
    return failures;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "escape") == 0 && argc > 2) {
        return escape(argv[2], argc > 3 && strcmp(argv[3], "cwd") == 0);
    }
    if (strcmp(mode, "write") == 0) return write_mode();
    if (strcmp(mode, "stdin") == 0) return stdin_mode();
    if (strcmp(mode, "cwd") == 0) return cwd_mode();
    fprintf(stderr, "usage: wasi_probe escape|write|stdin|cwd\n");
    return 64;
}
