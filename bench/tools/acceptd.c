/*
 * acceptd: a fast accept-and-close TCP server for bench/connect_rate.py.
 *
 *   acceptd -a ADDR -p PORT [-t THREADS] [-d MAX_SECONDS] [-r READY_FILE]
 *
 * Each thread owns an SO_REUSEPORT listener and an epoll loop; every accepted
 * socket is closed at once (a normal FIN close: the client then closes with a
 * RST, which ends both sides without TIME_WAIT; a RST from this side instead
 * would race the client's connect and show up there as ECONNRESET). Exits on SIGINT/SIGTERM or after MAX_SECONDS
 * (default 900: the process is bounded even if its parent dies), then prints
 * {"accepted": N} on stdout. READY_FILE is created once every listener is up.
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

static atomic_int stop_flag;
static struct sockaddr_storage listen_addr;
static socklen_t listen_len;

struct worker {
    pthread_t tid;
    int lfd;
    atomic_ullong accepted;
};

static void on_signal(int sig) { (void)sig; atomic_store(&stop_flag, 1); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int make_listener(void) {
    int fd = socket(listen_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { perror("socket"); exit(1); }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&listen_addr, listen_len) < 0) { perror("bind"); exit(1); }
    if (listen(fd, 65535) < 0) { perror("listen"); exit(1); }
    return fd;
}

static void *run(void *arg) {
    struct worker *w = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = w->lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, w->lfd, &ev);
    while (!atomic_load(&stop_flag)) {
        struct epoll_event out[4];
        int n = epoll_wait(ep, out, 4, 100);
        if (n <= 0) continue;
        for (;;) {
            int c = accept4(w->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0) break; /* EAGAIN, or a connection reset before accept */
            close(c);
            atomic_fetch_add_explicit(&w->accepted, 1, memory_order_relaxed);
        }
    }
    close(ep);
    return NULL;
}

int main(int argc, char **argv) {
    const char *addr = NULL, *ready = NULL;
    int port = 0, threads = 1;
    double max_s = 900;
    int opt;
    while ((opt = getopt(argc, argv, "a:p:t:d:r:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'd': max_s = atof(optarg); break;
        case 'r': ready = optarg; break;
        default:
            fprintf(stderr, "usage: acceptd -a ADDR -p PORT [-t THREADS] [-d MAX_S] [-r READY]\n");
            return 2;
        }
    }
    if (!addr || port <= 0 || port > 65535 || threads < 1 || threads > MAX_THREADS || max_s <= 0) {
        fprintf(stderr, "acceptd: bad arguments\n");
        return 2;
    }
    memset(&listen_addr, 0, sizeof listen_addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&listen_addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&listen_addr;
    if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        listen_len = sizeof *a4;
    } else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        listen_len = sizeof *a6;
    } else {
        fprintf(stderr, "acceptd: bad address %s\n", addr);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct worker ws[MAX_THREADS];
    for (int i = 0; i < threads; i++) ws[i].lfd = make_listener();
    for (int i = 0; i < threads; i++) pthread_create(&ws[i].tid, NULL, run, &ws[i]);
    if (ready) {
        FILE *f = fopen(ready, "w");
        if (f) fclose(f);
    }
    double deadline = now_s() + max_s;
    while (!atomic_load(&stop_flag) && now_s() < deadline) usleep(50000);
    atomic_store(&stop_flag, 1);
    unsigned long long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].tid, NULL);
        total += atomic_load(&ws[i].accepted);
        close(ws[i].lfd);
    }
    printf("{\"accepted\": %llu}\n", total);
    return 0;
}
