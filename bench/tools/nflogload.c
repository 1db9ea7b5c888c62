/*
 * nflogload: send UDP datagrams at a fixed rate to an address that the firewall logs and
 * drops, for bench/monitor.py. Every datagram is one NFLOG message; send() fails with EPERM
 * (dropped in the output hook), which is expected and counted.
 *
 *   nflogload -a ADDR [-r RATE_PER_S] [-d SECONDS]
 *
 * Pacing: the run is cut into 1 ms slots; each slot sends its share, then sleeps until the
 * next slot (absolute deadlines: no drift). Destination ports rotate over 1024-65535.
 * Prints one JSON line: {"sent", "eperm", "other_errors", "seconds", "rate"}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    const char *addr = NULL;
    double rate = 50000, seconds = 3;
    int opt;
    while ((opt = getopt(argc, argv, "a:r:d:")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'r': rate = atof(optarg); break;
        case 'd': seconds = atof(optarg); break;
        default: fprintf(stderr, "usage: nflogload -a ADDR [-r RATE] [-d SECONDS]\n"); return 2;
        }
    }
    if (!addr || rate <= 0 || seconds <= 0 || seconds > 600) {
        fprintf(stderr, "nflogload: need -a ADDR, a positive rate and 0 < seconds <= 600\n");
        return 2;
    }
    struct sockaddr_in dst = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, addr, &dst.sin_addr) != 1) {
        fprintf(stderr, "nflogload: bad IPv4 address %s\n", addr);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    long long sent = 0, eperm = 0, other = 0, port = 0;
    const double slot = 0.001;
    double start = now();
    long long slots = (long long)(seconds / slot);
    for (long long s = 0; s < slots; s++) {
        long long due = (long long)(rate * slot * (s + 1));
        while (sent < due) {
            dst.sin_port = htons((uint16_t)(1024 + (port++ % 64512)));
            if (sendto(fd, "x", 1, 0, (struct sockaddr *)&dst, sizeof dst) < 0) {
                if (errno == EPERM) eperm++; else other++;
            }
            sent++;
        }
        double next = start + slot * (s + 1);
        double left = next - now();
        if (left > 0) {
            struct timespec ts = {.tv_sec = (time_t)left, .tv_nsec = (long)((left - (time_t)left) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    double took = now() - start;
    printf("{\"sent\": %lld, \"eperm\": %lld, \"other_errors\": %lld, \"seconds\": %.3f, \"rate\": %.0f}\n",
           sent, eperm, other, took, sent / took);
    close(fd);
    return 0;
}
