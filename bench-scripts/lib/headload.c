/* headload: a closed-loop HTTP/1.1 HEAD load generator (epoll, one thread per -t), for the
 * "manifest HEAD by tag" cell. wrk 4.1 cannot do HEAD (it waits for the body its Content-Length
 * announces) and ab speaks HTTP/1.0 keep-alive, which not every server under test honours.
 *
 *   headload -t THREADS -c CONNS -d SECONDS [-H "Name: value"]... http://HOST:PORT/path
 *
 * Prints one line "JSON {...}" in the same shape as lib/wrk-json.lua. Each response must be
 * a complete header block; 2xx/3xx counts as a request, anything else as errors.status.
 * A connection the server closes is reopened (errors.read counts it).
 * Build: cc -O2 -pthread -o headload headload.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;
static char request[4096];
static size_t request_len;
static double duration;
static int conns_per_thread[64];

struct conn {
    int fd;
    size_t sent;
    char buf[16384];
    size_t got;
    uint64_t start_ns;
};

struct result {
    uint64_t requests, bytes, e_connect, e_read, e_write, e_status, e_timeout;
    uint32_t *lat; /* microseconds */
    size_t nlat, cap;
};

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec;
}

static int open_conn(int ep, struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        return -1;
    }
    c->sent = c->got = 0;
    c->start_ns = now_ns();
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void reopen(int ep, struct conn *c, struct result *r) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (open_conn(ep, c) < 0) r->e_connect++;
}

static void want(int ep, struct conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void *worker(void *arg) {
    long id = (long)arg;
    int n = conns_per_thread[id];
    struct result *r = calloc(1, sizeof *r);
    r->cap = 1 << 20;
    r->lat = malloc(r->cap * sizeof *r->lat);
    int ep = epoll_create1(0);
    struct conn *cs = calloc(n, sizeof *cs);
    for (int i = 0; i < n; i++)
        if (open_conn(ep, &cs[i]) < 0) r->e_connect++;
    uint64_t end = now_ns() + (uint64_t)(duration * 1e9);
    struct epoll_event evs[256];
    while (now_ns() < end) {
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->sent < request_len && (evs[i].events & EPOLLOUT)) {
                ssize_t w = write(c->fd, request + c->sent, request_len - c->sent);
                if (w < 0 && errno != EAGAIN) { r->e_write++; reopen(ep, c, r); continue; }
                if (w > 0) c->sent += w;
                if (c->sent == request_len) want(ep, c, EPOLLIN);
            }
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                ssize_t g = read(c->fd, c->buf + c->got, sizeof c->buf - 1 - c->got);
                if (g == 0 || (g < 0 && errno != EAGAIN)) { r->e_read++; reopen(ep, c, r); continue; }
                if (g < 0) continue;
                c->got += g;
                c->buf[c->got] = 0;
                char *eoh = strstr(c->buf, "\r\n\r\n");
                if (!eoh) {
                    if (c->got >= sizeof c->buf - 1) { r->e_read++; reopen(ep, c, r); }
                    continue;
                }
                uint64_t t = now_ns();
                int status = atoi(c->buf + 9);
                r->bytes += (eoh + 4 - c->buf);
                if (status >= 200 && status < 400) {
                    r->requests++;
                    if (r->nlat == r->cap) {
                        r->cap *= 2;
                        r->lat = realloc(r->lat, r->cap * sizeof *r->lat);
                    }
                    r->lat[r->nlat++] = (uint32_t)((t - c->start_ns) / 1000);
                } else {
                    r->e_status++;
                }
                int closing = strcasestr(c->buf, "\r\nconnection: close") != NULL;
                size_t rest = c->got - (eoh + 4 - c->buf); /* pipelined leftovers: none expected */
                if (closing || rest) { reopen(ep, c, r); continue; }
                c->got = 0;
                c->start_ns = t;
                ssize_t w = write(c->fd, request, request_len);
                c->sent = w > 0 ? (size_t)w : 0;
                if (c->sent < request_len) want(ep, c, EPOLLOUT | EPOLLIN);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        close(cs[i].fd);
    }
    close(ep);
    return r;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int threads = 2, conns = 64, opt;
    char headers[2048] = "";
    duration = 5;
    while ((opt = getopt(argc, argv, "t:c:d:H:")) != -1) {
        if (opt == 't') threads = atoi(optarg);
        else if (opt == 'c') conns = atoi(optarg);
        else if (opt == 'd') duration = atof(optarg);
        else if (opt == 'H') { strncat(headers, optarg, sizeof headers - strlen(headers) - 3); strcat(headers, "\r\n"); }
        else { fprintf(stderr, "usage: headload -t T -c C -d S [-H h]... URL\n"); return 2; }
    }
    if (optind >= argc || threads < 1 || threads > 64 || conns < threads) { fprintf(stderr, "bad arguments\n"); return 2; }
    char host[256], path[2048] = "/";
    int port = 80;
    if (sscanf(argv[optind], "http://%255[^:/]:%d%2047s", host, &port, path) < 2) { fprintf(stderr, "URL must be http://HOST:PORT/path\n"); return 2; }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, NULL, &hints, &ai)) { fprintf(stderr, "cannot resolve %s\n", host); return 2; }
    addr = *(struct sockaddr_in *)ai->ai_addr;
    addr.sin_port = htons(port);
    request_len = snprintf(request, sizeof request, "HEAD %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n", path, host, port, headers);
    for (int i = 0; i < threads; i++) conns_per_thread[i] = conns / threads + (i < conns % threads);
    pthread_t th[64];
    uint64_t t0 = now_ns();
    for (long i = 0; i < threads; i++) pthread_create(&th[i], NULL, worker, (void *)i);
    struct result tot = {0};
    tot.lat = malloc(sizeof *tot.lat);
    for (int i = 0; i < threads; i++) {
        struct result *r;
        pthread_join(th[i], (void **)&r);
        tot.requests += r->requests; tot.bytes += r->bytes; tot.e_connect += r->e_connect; tot.e_read += r->e_read;
        tot.e_write += r->e_write; tot.e_status += r->e_status;
        tot.lat = realloc(tot.lat, (tot.nlat + r->nlat + 1) * sizeof *tot.lat);
        memcpy(tot.lat + tot.nlat, r->lat, r->nlat * sizeof *r->lat);
        tot.nlat += r->nlat;
    }
    uint64_t dur_us = (now_ns() - t0) / 1000;
    qsort(tot.lat, tot.nlat, sizeof *tot.lat, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < tot.nlat; i++) sum += tot.lat[i];
#define PCT(p) (tot.nlat ? tot.lat[(size_t)((p) / 100.0 * (tot.nlat - 1))] : 0)
    static const double pcts[] = {1, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 97, 98, 99, 99.5, 99.9, 99.99, 100};
    printf("JSON {\"duration_us\": %llu, \"requests\": %llu, \"bytes\": %llu, "
           "\"errors\": {\"connect\": %llu, \"read\": %llu, \"write\": %llu, \"status\": %llu, \"timeout\": 0}, "
           "\"lat_us\": {\"min\": %u, \"mean\": %.1f, \"max\": %u, \"p50\": %u, \"p90\": %u, \"p99\": %u}, \"cdf_us\": [",
           (unsigned long long)dur_us, (unsigned long long)tot.requests, (unsigned long long)tot.bytes,
           (unsigned long long)tot.e_connect, (unsigned long long)tot.e_read, (unsigned long long)tot.e_write,
           (unsigned long long)tot.e_status, PCT(0), tot.nlat ? sum / tot.nlat : 0.0, PCT(100), PCT(50), PCT(90), PCT(99));
    for (size_t i = 0; i < sizeof pcts / sizeof *pcts; i++) printf("%s[%g, %u]", i ? ", " : "", pcts[i], PCT(pcts[i]));
    printf("]}\n");
    return 0;
}
