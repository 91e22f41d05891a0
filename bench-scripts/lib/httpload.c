/* httpload: an HTTP/1.1 keep-alive load generator (epoll, one thread per -t) for the small-request
 * cells of run-all, in two modes:
 *
 *   closed loop (default): every connection sends its next request as soon as the last response is
 *     complete; the request rate is whatever the server (and this client) can do. Used for HEAD,
 *     which wrk 4.1 cannot do (it waits for the body a HEAD's Content-Length announces) and ab
 *     speaks only with HTTP/1.0 keep-alive.
 *   open loop (-R RATE): requests are scheduled at a fixed total rate, spread evenly over the
 *     connections and over time, whatever the server does. Latency is measured from each request's
 *     scheduled time, not from when it was written, so a server that stalls is charged for every
 *     request it holds up (no "coordinated omission", as in wrk2). This is how two servers' tails
 *     compare at the same offered load; a closed loop compares tails at different loads.
 *
 *   httpload [-m GET|HEAD] [-t THREADS] [-c CONNS] [-d SECONDS] [-R REQ_PER_S] [-H "Name: value"]... URL
 *
 * Prints one line "JSON {...}" in the shape of lib/wrk-json.lua, plus "target_rps" in open loop.
 * A response must have a complete header block and, for GET, exactly Content-Length body bytes
 * (chunked bodies are not expected from the servers under test: errors.read); 2xx/3xx counts as a
 * request, anything else as errors.status. A connection is reopened after `Connection: close` (no
 * error), after the server closes it unannounced (errors.read) or a failed connect (errors.connect,
 * retried every 10 ms). Open loop: a request due in the run and not answered within 2 s after it is
 * errors.timeout. Every loop is bounded by -d (+2 s). Build: cc -O2 -pthread -o httpload httpload.c
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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;
static char request[4096];
static size_t request_len;
static int is_head;
static double duration;
static double rate; /* total requests/s; 0 = closed loop */
static int total_conns;
static int conns_per_thread[64], first_conn_of_thread[64];
static uint64_t t_start;

struct conn {
    int fd;              /* -1 while disconnected */
    uint32_t events;     /* the epoll mask registered for fd */
    int busy;            /* a request is outstanding */
    size_t sent;         /* bytes of the request written on this fd */
    char buf[16384];
    size_t got;          /* header bytes buffered */
    int64_t body_left;   /* body bytes still to read; -1 while the header is incomplete */
    int status, closing;
    uint64_t sched_ns;   /* when the outstanding request was due (open loop) or written (closed) */
    uint64_t next_ns;    /* open loop: when the next request is due */
    uint64_t retry_ns;   /* disconnected: when to connect again */
};

struct result {
    uint64_t requests, bytes, e_connect, e_read, e_write, e_status, e_timeout;
    uint32_t *lat; /* microseconds */
    size_t nlat, cap;
};

/* Open loop: how long after the run's end requests due in the run may still complete; those that do
 * not are counted as timeouts, so a stall at the end is not lost from the figures. */
#define GRACE_NS 2000000000u
#define RETRY_NS 10000000u /* a failed connect is tried again after 10 ms */

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec;
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static void set_events(int ep, struct conn *c, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static int open_conn(int ep, struct conn *c) {
    c->busy = 0;
    c->sent = c->got = 0;
    c->body_left = -1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if ((connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) ||
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->events = EPOLLIN;
    return 0;
}

/* Closes the connection (the scan connects it again from `retry_at` on). An outstanding request is
 * lost: `counter` (an error kind, or NULL for a close the server announced) says why. */
static void drop_conn(int ep, struct conn *c, uint64_t *counter, uint64_t retry_at) {
    if (counter) (*counter)++;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->busy = 0;
    c->retry_ns = retry_at;
}

/* Writes what is left of the request; 0 on success (done or would block), -1 on error. */
static int send_more(int ep, struct conn *c) {
    while (c->sent < request_len) {
        ssize_t w = write(c->fd, request + c->sent, request_len - c->sent);
        if (w < 0 && errno == EAGAIN) { set_events(ep, c, EPOLLIN | EPOLLOUT); return 0; }
        if (w <= 0) return -1;
        c->sent += w;
    }
    set_events(ep, c, EPOLLIN);
    return 0;
}

static int start_request(int ep, struct conn *c, uint64_t sched) {
    c->busy = 1;
    c->sent = c->got = 0;
    c->body_left = -1;
    c->sched_ns = sched;
    return send_more(ep, c);
}

static void record(struct result *r, struct conn *c, uint64_t t) {
    r->bytes += c->got;
    if (c->status >= 200 && c->status < 400) {
        r->requests++;
        if (r->nlat == r->cap) {
            r->cap *= 2;
            r->lat = realloc(r->lat, r->cap * sizeof *r->lat);
        }
        r->lat[r->nlat++] = (uint32_t)((t - c->sched_ns) / 1000);
    } else {
        r->e_status++;
    }
}

/* Reads what the socket has; returns 1 when a whole response has arrived, 0 for more, -1 on error. */
static int read_response(struct conn *c, struct result *r) {
    for (;;) {
        if (c->body_left < 0) {
            ssize_t g = read(c->fd, c->buf + c->got, sizeof c->buf - 1 - c->got);
            if (g < 0 && errno == EAGAIN) return 0;
            if (g <= 0) return -1;
            c->got += g;
            c->buf[c->got] = 0;
            char *eoh = strstr(c->buf, "\r\n\r\n");
            if (!eoh) {
                if (c->got >= sizeof c->buf - 1) return -1;
                continue;
            }
            size_t head = eoh + 4 - c->buf;
            if (head < 16 || strncmp(c->buf, "HTTP/1.", 7) != 0) return -1;
            char keep = eoh[2];
            eoh[2] = 0; /* header lookups below stay inside the header block */
            c->status = atoi(c->buf + 9);
            c->closing = strcasestr(c->buf, "\r\nconnection: close") != NULL;
            char *cl = strcasestr(c->buf, "\r\ncontent-length:");
            int chunked = strcasestr(c->buf, "\r\ntransfer-encoding:") != NULL;
            eoh[2] = keep;
            if (!is_head && !cl && chunked) return -1;
            int64_t len = cl ? strtoll(cl + 17, NULL, 10) : 0;
            int64_t extra = (int64_t)(c->got - head);
            c->body_left = is_head ? 0 : len;
            if (extra > c->body_left) return -1; /* pipelined leftovers: none expected */
            c->body_left -= extra;
            r->bytes += extra;
            c->got = head; /* header bytes, counted by record() */
        }
        while (c->body_left > 0) {
            char sink[65536];
            size_t n = c->body_left < (int64_t)sizeof sink ? (size_t)c->body_left : sizeof sink;
            ssize_t g = read(c->fd, sink, n);
            if (g < 0 && errno == EAGAIN) return 0;
            if (g <= 0) return -1;
            c->body_left -= g;
            r->bytes += g;
        }
        return 1;
    }
}

static void *worker(void *arg) {
    long id = (long)arg;
    int n = conns_per_thread[id];
    struct result *r = calloc(1, sizeof *r);
    r->cap = 1 << 20;
    r->lat = malloc(r->cap * sizeof *r->lat);
    prctl(PR_SET_TIMERSLACK, 1UL); /* open loop: wake up on time, not 50 us late */
    int ep = epoll_create1(0);
    struct conn *cs = calloc(n, sizeof *cs);
    /* open loop: connection k (of all threads) is first due at t_start + k/rate, then every conns/rate */
    uint64_t interval = rate > 0 ? (uint64_t)(total_conns * 1e9 / rate) : 0;
    for (int i = 0; i < n; i++) {
        if (open_conn(ep, &cs[i]) < 0) r->e_connect++;
        cs[i].next_ns = t_start + (uint64_t)((first_conn_of_thread[id] + i) * 1e9 / (rate > 0 ? rate : 1));
    }
    uint64_t end = t_start + (uint64_t)(duration * 1e9);
    uint64_t stop = rate > 0 ? end + GRACE_NS : end;
    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= stop) break;
        /* The scan: connect what is disconnected, start what is due. Closed loop: every idle
         * connection sends at once (from t_start on); open loop: each sends when its next request
         * is due, and only requests due before `end` are sent. */
        uint64_t wake = rate > 0 && now < end ? end : stop; /* at `end` the open loop checks what is pending */
        int pending = 0; /* open loop: requests due in the run not yet answered */
        for (int i = 0; i < n; i++) {
            struct conn *c = &cs[i];
            int owes = rate > 0 && c->next_ns < end;
            pending |= owes || c->busy;
            if (c->fd < 0) {
                if (!owes && rate > 0) continue;
                if (now < c->retry_ns) { wake = min_u64(wake, c->retry_ns); continue; }
                if (open_conn(ep, c) < 0) {
                    r->e_connect++;
                    c->retry_ns = now + RETRY_NS;
                    wake = min_u64(wake, c->retry_ns);
                    continue;
                }
            }
            if (c->busy) continue;
            uint64_t due = rate > 0 ? c->next_ns : (now < t_start ? t_start : now);
            if (!owes && rate > 0) continue;
            if (due > now) { wake = min_u64(wake, due); continue; }
            if (rate > 0) c->next_ns += interval;
            if (start_request(ep, c, due) < 0) {
                drop_conn(ep, c, &r->e_write, now + RETRY_NS);
                wake = min_u64(wake, c->retry_ns);
            }
        }
        if (rate > 0 && now >= end && !pending) break;
        uint64_t left = wake > now ? wake - now : 0;
        struct timespec to = {.tv_sec = left / 1000000000u, .tv_nsec = left % 1000000000u};
        int k = epoll_pwait2(ep, evs, 256, &to, NULL);
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0) continue; /* dropped by an earlier event of this batch */
            if ((evs[i].events & EPOLLOUT) && c->busy && c->sent < request_len && send_more(ep, c) < 0) {
                drop_conn(ep, c, &r->e_write, now_ns() + RETRY_NS);
                continue;
            }
            if (!(evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) continue;
            if (!c->busy) { /* a connect that failed, or the server closed an idle connection */
                drop_conn(ep, c, c->sent == 0 ? &r->e_connect : &r->e_read, now_ns() + RETRY_NS);
                continue;
            }
            int done = read_response(c, r);
            if (done < 0) { drop_conn(ep, c, &r->e_read, now_ns() + RETRY_NS); continue; }
            if (!done) continue;
            uint64_t t = now_ns();
            record(r, c, t);
            c->busy = 0;
            if (c->closing) { drop_conn(ep, c, NULL, t); continue; } /* reconnected by the next scan */
            if (rate <= 0) {
                if (t < end && start_request(ep, c, t) < 0) drop_conn(ep, c, &r->e_write, t + RETRY_NS);
            } else if (c->next_ns <= t && c->next_ns < end) { /* late: the next one goes now, timed from when it was due */
                uint64_t due = c->next_ns;
                c->next_ns += interval;
                if (start_request(ep, c, due) < 0) drop_conn(ep, c, &r->e_write, t + RETRY_NS);
            }
        }
    }
    for (int i = 0; i < n; i++) {
        struct conn *c = &cs[i];
        if (rate > 0) { /* requests due in the run and not answered within the grace period */
            if (c->busy) r->e_timeout++;
            if (c->next_ns < end) r->e_timeout += (end - c->next_ns + interval - 1) / interval;
        }
        if (c->fd >= 0) close(c->fd);
    }
    close(ep);
    free(cs);
    return r;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int threads = 2, conns = 64, opt;
    char headers[2048] = "", method[8] = "HEAD";
    duration = 5;
    while ((opt = getopt(argc, argv, "m:t:c:d:R:H:")) != -1) {
        if (opt == 'm') snprintf(method, sizeof method, "%s", optarg);
        else if (opt == 't') threads = atoi(optarg);
        else if (opt == 'c') conns = atoi(optarg);
        else if (opt == 'd') duration = atof(optarg);
        else if (opt == 'R') rate = atof(optarg);
        else if (opt == 'H') {
            if (strlen(headers) + strlen(optarg) + 3 > sizeof headers) { fprintf(stderr, "headers too long\n"); return 2; }
            strcat(headers, optarg);
            strcat(headers, "\r\n");
        }
        else { fprintf(stderr, "usage: httpload [-m GET|HEAD] [-t T] [-c C] [-d S] [-R RATE] [-H h]... URL\n"); return 2; }
    }
    is_head = strcmp(method, "HEAD") == 0;
    if (optind >= argc || threads < 1 || threads > 64 || conns < threads || duration <= 0 || duration > 3600 ||
        rate < 0 || (!is_head && strcmp(method, "GET") != 0)) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    char host[256], path[2048] = "/";
    int port = 80;
    if (sscanf(argv[optind], "http://%255[^:/]:%d%2047s", host, &port, path) < 2) { fprintf(stderr, "URL must be http://HOST:PORT/path\n"); return 2; }
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, NULL, &hints, &ai)) { fprintf(stderr, "cannot resolve %s\n", host); return 2; }
    addr = *(struct sockaddr_in *)ai->ai_addr;
    addr.sin_port = htons(port);
    int len = snprintf(request, sizeof request, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n", method, path, host, port, headers);
    if (len < 0 || (size_t)len >= sizeof request) { fprintf(stderr, "request too long\n"); return 2; }
    request_len = (size_t)len;
    total_conns = conns;
    for (int i = 0, k = 0; i < threads; i++) {
        conns_per_thread[i] = conns / threads + (i < conns % threads);
        first_conn_of_thread[i] = k;
        k += conns_per_thread[i];
    }
    pthread_t th[64];
    t_start = now_ns() + 20000000u; /* 20 ms for the threads to connect before the first request is due */
    for (long i = 0; i < threads; i++) pthread_create(&th[i], NULL, worker, (void *)i);
    struct result tot = {0};
    tot.lat = malloc(sizeof *tot.lat);
    for (int i = 0; i < threads; i++) {
        struct result *r;
        pthread_join(th[i], (void **)&r);
        tot.requests += r->requests; tot.bytes += r->bytes; tot.e_connect += r->e_connect; tot.e_read += r->e_read;
        tot.e_write += r->e_write; tot.e_status += r->e_status; tot.e_timeout += r->e_timeout;
        tot.lat = realloc(tot.lat, (tot.nlat + r->nlat + 1) * sizeof *tot.lat);
        memcpy(tot.lat + tot.nlat, r->lat, r->nlat * sizeof *r->lat);
        tot.nlat += r->nlat;
    }
    /* the run's window: in open loop every request due in it was answered or counted as a timeout */
    uint64_t dur_us = rate > 0 ? (uint64_t)(duration * 1e6) : (now_ns() - t_start) / 1000;
    qsort(tot.lat, tot.nlat, sizeof *tot.lat, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < tot.nlat; i++) sum += tot.lat[i];
#define PCT(p) (tot.nlat ? tot.lat[(size_t)((p) / 100.0 * (tot.nlat - 1))] : 0)
    static const double pcts[] = {1, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 97, 98, 99, 99.5, 99.9, 99.99, 100};
    printf("JSON {\"duration_us\": %llu, \"requests\": %llu, \"bytes\": %llu, \"target_rps\": %.0f, "
           "\"errors\": {\"connect\": %llu, \"read\": %llu, \"write\": %llu, \"status\": %llu, \"timeout\": %llu}, "
           "\"lat_us\": {\"min\": %u, \"mean\": %.1f, \"max\": %u, \"p50\": %u, \"p90\": %u, \"p99\": %u, \"p999\": %u}, \"cdf_us\": [",
           (unsigned long long)dur_us, (unsigned long long)tot.requests, (unsigned long long)tot.bytes, rate,
           (unsigned long long)tot.e_connect, (unsigned long long)tot.e_read, (unsigned long long)tot.e_write,
           (unsigned long long)tot.e_status, (unsigned long long)tot.e_timeout, PCT(0), tot.nlat ? sum / tot.nlat : 0.0, PCT(100), PCT(50), PCT(90), PCT(99),
           PCT(99.9));
    for (size_t i = 0; i < sizeof pcts / sizeof *pcts; i++) printf("%s[%g, %u]", i ? ", " : "", pcts[i], PCT(pcts[i]));
    printf("]}\n");
    return 0;
}
