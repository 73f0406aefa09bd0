/* LD_PRELOAD shim for the slow-disk fault test: every write(2) to a file whose path contains
 * $STALL_PATTERN sleeps $STALL_MS first. Real writes, made slow at the OS boundary, with no
 * test hook in the server. Built by the test with: gcc -shared -fPIC -o stall.so stall_writes.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);

static int stalled(int fd) {
    const char *pattern = getenv("STALL_PATTERN");
    char link[64], path[PATH_MAX];
    if (!pattern || !*pattern) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strstr(path, pattern) != NULL;
}

ssize_t write(int fd, const void *buf, size_t count) {
    if (!real_write) real_write = dlsym(RTLD_NEXT, "write");
    if (stalled(fd)) {
        const char *ms = getenv("STALL_MS");
        long delay = ms ? atol(ms) : 100;
        struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return real_write(fd, buf, count);
}
