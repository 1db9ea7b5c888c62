/*
 * connloop: open TCP connections as fast as possible, for bench/connect_rate.py.
 *
 *   connloop -a ADDR -p PORT [-t THREADS] [-c IN_FLIGHT] [-w WARMUP_S] [-d SECONDS]
 *            [-n MAX_DONE] [-T TIMEOUT_MS]
 *
 * Each thread keeps IN_FLIGHT non-blocking connects going on its own epoll
 * loop. A connect that completes is counted and closed at once with
 * SO_LINGER {1,0}: the close sends a RST, so no TIME_WAIT exhausts the
 * ephemeral ports. Connects that fail are counted by errno; those that are not
 * answered within TIMEOUT_MS are abandoned and counted as timeouts.
 *
 * Counting starts after WARMUP_S and lasts SECONDS, or until MAX_DONE attempts
 * have finished since the start (one-shot probes: -n 1 -c 1 -w 0). The run is always bounded in time.
 * Prints one JSON line: {"ok", "failed", "timeouts", "seconds", "rate", "last_error"}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 16
#define MAX_IN_FLIGHT 4096

static atomic_int stop_flag;
static struct sockaddr_storage dst;
static socklen_t dst_len;
static int in_flight = 32;
static double timeout_s = 1.0;
static atomic_int last_errno;
static atomic_ullong done_count; /* attempts finished, for -n */
static unsigned long long max_done;

struct worker {
    pthread_t tid;
    atomic_ullong ok, failed, timeouts;
};

struct slot {
    int fd;
    double started;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig) { (void)sig; atomic_store(&stop_flag, 1); }

static void finished(void) {
    if (max_done && atomic_fetch_add(&done_count, 1) + 1 >= max_done) atomic_store(&stop_flag, 1);
}

static void fail(struct worker *w, int err) {
    finished();
    atomic_store(&last_errno, err);
    atomic_fetch_add_explicit(&w->failed, 1, memory_order_relaxed);
}

/* Start one connect in slot s; returns 0 if it is pending, -1 if it ended at once. */
static int start(struct worker *w, int ep, struct slot *slots, int s) {
    static const struct linger lg = {.l_onoff = 1, .l_linger = 0};
    int fd = socket(dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { fail(w, errno); return -1; }
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (connect(fd, (struct sockaddr *)&dst, dst_len) == 0) {
        finished();
        atomic_fetch_add_explicit(&w->ok, 1, memory_order_relaxed);
        close(fd);
        return -1;
    }
    if (errno != EINPROGRESS) {
        fail(w, errno);
        close(fd);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)s};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    slots[s].fd = fd;
    slots[s].started = now_s();
    return 0;
}

static void *run(void *arg) {
    struct worker *w = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct slot *slots = calloc((size_t)in_flight, sizeof *slots);
    struct epoll_event *evs = calloc((size_t)in_flight, sizeof *evs);
    for (int i = 0; i < in_flight; i++) slots[i].fd = -1;
    double last_scan = now_s();
    while (!atomic_load(&stop_flag)) {
        int immediate = 0;
        for (int i = 0; i < in_flight && !atomic_load(&stop_flag); i++)
            if (slots[i].fd < 0 && start(w, ep, slots, i) < 0) immediate++;
        if (immediate == in_flight) usleep(1000); /* everything fails at once: do not spin */
        int n = epoll_wait(ep, evs, in_flight, 10);
        for (int k = 0; k < n; k++) {
            int s = (int)evs[k].data.u32;
            int fd = slots[s].fd, err = 0;
            socklen_t len = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err == 0) {
                finished();
                atomic_fetch_add_explicit(&w->ok, 1, memory_order_relaxed);
            } else
                fail(w, err);
            close(fd); /* RST: SO_LINGER {1,0} */
            slots[s].fd = -1;
        }
        double t = now_s();
        if (t - last_scan > 0.01) {
            last_scan = t;
            for (int i = 0; i < in_flight; i++) {
                if (slots[i].fd >= 0 && t - slots[i].started > timeout_s) {
                    close(slots[i].fd);
                    slots[i].fd = -1;
                    finished();
                    atomic_fetch_add_explicit(&w->timeouts, 1, memory_order_relaxed);
                }
            }
        }
    }
    for (int i = 0; i < in_flight; i++)
        if (slots[i].fd >= 0) close(slots[i].fd);
    free(slots);
    free(evs);
    close(ep);
    return NULL;
}

static struct worker ws[MAX_THREADS];
static int nthreads = 1;

static void totals(unsigned long long *ok, unsigned long long *failed, unsigned long long *to) {
    *ok = *failed = *to = 0;
    for (int i = 0; i < nthreads; i++) {
        *ok += atomic_load(&ws[i].ok);
        *failed += atomic_load(&ws[i].failed);
        *to += atomic_load(&ws[i].timeouts);
    }
}

static void sleep_until(double t) {
    while (!atomic_load(&stop_flag) && now_s() < t) usleep(max_done ? 1000 : 20000);
}

int main(int argc, char **argv) {
    const char *addr = NULL;
    int port = 0;
    double warmup = 0, seconds = 5;
    int opt;
    while ((opt = getopt(argc, argv, "a:p:t:c:w:d:n:T:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 't': nthreads = atoi(optarg); break;
        case 'c': in_flight = atoi(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'd': seconds = atof(optarg); break;
        case 'n': max_done = strtoull(optarg, NULL, 10); break;
        case 'T': timeout_s = atof(optarg) / 1000.0; break;
        default:
            fprintf(stderr, "usage: connloop -a ADDR -p PORT [-t THREADS] [-c IN_FLIGHT] "
                            "[-w WARMUP_S] [-d SECONDS] [-n MAX_DONE] [-T TIMEOUT_MS]\n");
            return 2;
        }
    }
    if (!addr || port <= 0 || port > 65535 || nthreads < 1 || nthreads > MAX_THREADS ||
        in_flight < 1 || in_flight > MAX_IN_FLIGHT || seconds <= 0 || seconds > 600 ||
        warmup < 0 || warmup > 600 || timeout_s <= 0) {
        fprintf(stderr, "connloop: bad arguments\n");
        return 2;
    }
    memset(&dst, 0, sizeof dst);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&dst;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&dst;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        dst_len = sizeof *a4;
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        dst_len = sizeof *a6;
    } else {
        fprintf(stderr, "connloop: bad address %s\n", addr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (int i = 0; i < nthreads; i++) pthread_create(&ws[i].tid, NULL, run, &ws[i]);
    unsigned long long base[3], end[3];
    double t0 = now_s();
    sleep_until(t0 + warmup);
    totals(&base[0], &base[1], &base[2]);
    double t1 = now_s();
    sleep_until(t1 + seconds);
    totals(&end[0], &end[1], &end[2]);
    double t2 = now_s();
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < nthreads; i++) pthread_join(ws[i].tid, NULL);

    double elapsed = t2 - t1;
    unsigned long long ok = end[0] - base[0];
    int le = atomic_load(&last_errno);
    printf("{\"ok\": %llu, \"failed\": %llu, \"timeouts\": %llu, \"seconds\": %.6f, "
           "\"rate\": %.1f, \"last_error\": \"%s\"}\n",
           ok, end[1] - base[1], end[2] - base[2], elapsed, elapsed > 0 ? ok / elapsed : 0.0,
           le ? strerrorname_np(le) : "");
    return 0;
}
