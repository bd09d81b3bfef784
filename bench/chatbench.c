/* chatbench: the load generator of chatproto's benchmark (bench/run.py).
 *
 * One process, one epoll loop, non-blocking sockets. It speaks three dialects:
 *   chat  PROTOCOL.md: welcome, "/pseudo", prompt, nickname, "Bienvenue NICK"
 *         and the user list block; public lines; "ping" answered with "pong".
 *   ws    the chat dialect over a WebSocket (RFC 6455) at --path (/ws): an
 *         HTTP/1.1 upgrade (a random Sec-WebSocket-Key, the 101 and its
 *         Sec-WebSocket-Accept checked), then each line is one text message
 *         without its "\n", each way. Client frames are masked with a random
 *         mask each; server frames must not be. A received text message,
 *         whole or in continuation frames, goes to the chat dialect's line
 *         parser with a "\n" after it; ping frames are answered with a pong
 *         of the same payload, a close frame with a close, then the client
 *         closes. Anything else (a masked or malformed frame, a bad upgrade)
 *         closes the client and is counted (ws_bad_frames, ws_bad_upgrades).
 *   irc   RFC 1459: NICK/USER, 001, JOIN #bench, 366; PRIVMSG #bench;
 *         PING answered with PONG.
 *
 * Rooms (--rooms N): the clients are split into N rooms #r0 .. #r(N-1) of
 * consecutive ids, client i in #r(i*N/clients) (so the senders, spread over
 * the id range, fall one per room when there are N of them). Once
 * registered, a chat (or ws) client sends "/join #rK" and counts as
 * registered when it has read "Salon courant : #rK" and the room's user
 * list block after it; an IRC client JOINs #rK (for 366) instead of #bench
 * and PRIVMSGs it. A sender's lines go to its room: each is due to the
 * room's other registered members only, and a receiver counts it when the
 * line names its own room ("-#rK " in the chat, "PRIVMSG #rK :" in IRC) and
 * comes from a sender of that room; any other BENCH line is counted in
 * wrong_room, not as a delivery.
 *
 * Phases, each optional but the first:
 *   reg    connect and register --clients N clients. At most --inflight
 *          clients are between connect() and the end of their registration,
 *          at most --accept-window of them are not yet greeted by the server
 *          (so that a short listen backlog does not drop SYNs), and at most
 *          --connect-rate connect() calls start per second; 0 lifts each
 *          bound. With all three at 0 every connect() is issued at once, the
 *          way a herd arrives. --reg-timeout bounds the phase: a client not
 *          registered by then is lost (the JSON says where each got stuck).
 *   reconnect (--reconnect TRIES) once registered, print {"registered":N}
 *          on standard output and wait for SIGUSR1, the caller's word that
 *          it restarted the server and the new one listens. Meanwhile and
 *          after, every client whose connection closes or whose connect()
 *          is refused or reset tries again after 100-250 ms (uniform
 *          jitter), at most TRIES connect() calls each, and registers again.
 *          Reports the time from SIGUSR1 to the last re-registration and
 *          the clients that did not re-register within --reconnect-timeout.
 *   idle   hold every client idle for --idle seconds, answering pings, while
 *          sampling the server's CPU and resident memory from /proc/PID.
 *   send   --senders S clients, spread over the id range, each send one line
 *          every 1/--rate seconds for --duration seconds, then wait up to
 *          --drain seconds for the deliveries still due. Each line carries
 *          "BENCH <sender> <seq> <t_ns>", t_ns from CLOCK_MONOTONIC at send
 *          time; every receiver parses it out of whatever the server wraps
 *          around it and adds now - t_ns to a latency histogram.
 *
 * --spread K binds each group of K clients to its own source address
 * 127.1.x.y, for servers that limit connections per address. --port takes
 * a list (client i goes to port i mod n) and --pid a list whose CPU and
 * memory are summed, for a server made of several processes. Only loopback
 * targets (127.0.0.0/8) are accepted. Every phase has a time bound and the
 * whole run has --timeout: the tool always stops by itself.
 *
 * Prints one JSON object on standard output; progress goes to standard error.
 *
 * Build: cc -O2 -o chatbench chatbench.c -lm
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum {
    ST_IDLE,         /* not started */
    ST_CONNECTING,   /* connect() in progress */
    ST_WAIT_WELCOME, /* chat: connected, no line yet; irc: NICK/USER sent, no 001 */
    ST_WAIT_PROMPT,  /* chat: "/pseudo" sent */
    ST_WAIT_ACK,     /* chat: nickname sent; irc: JOIN sent */
    ST_WAIT_LIST,    /* chat: "Bienvenue NICK" seen, inside the list block */
    ST_WAIT_ROOM,    /* --rooms: chat: "/join #rK" sent; irc: JOIN #rK is ST_WAIT_ACK */
    ST_READY,
    ST_BACKOFF,      /* reconnect: closed, waiting for retry_at */
    ST_DEAD
};

typedef struct {
    int fd, state, id, hyphens, greeted, oper, sender;
    int joined; /* --rooms: "Salon courant : #rK" read, its list block follows */
    char *part; /* the unfinished line of the last read */
    int plen, pcap;
    char *wbuf; /* bytes the kernel did not take yet */
    int wlen, wcap;
    long sent;
    double t_start, next_send;
    int dropped, tries; /* reconnect: lost its first connection; connect() calls in the phase */
    double retry_at;
    /* ws: the upgrade, then the frame being read */
    int upgraded;      /* the 101 came and was right */
    char key[25];      /* our Sec-WebSocket-Key */
    char *resp;        /* the HTTP response so far, until the upgrade */
    int rlen;
    uint8_t hdr[14];   /* the frame header so far */
    int hlen, op, fin; /* its length; the frame's opcode and FIN bit once whole */
    uint64_t left;     /* payload bytes of the frame still to read */
    int msg_op;        /* opcode of the message in continuation frames, 0 outside one */
    uint8_t ctl[125];  /* a control frame's payload */
    int clen;
} Conn;

/* ---- options ---- */
static const char *host = "127.0.0.1";
static int ports[16] = {7000}, nports = 1, pids[16], npids = 0, nclients = 100, nsenders = 0, irc = 0, spread = 0;
static int inflight_max = 128, accept_window = 8, msg_pad = 0;
static double connect_rate = 20000, rate = 1.0, duration = 10, drain_s = 10;
static double idle_s = 0, reg_timeout = 180, total_timeout = 600, settle_s = 0.5;
static int ws = 0;
static const char *ws_path = "/ws";
static int irc_join = 1, irc_until_001 = 0, progress = 0, hold_stdin = 0;
static int reconnect_tries = 0;
static int nrooms = 0; /* --rooms N: 0 for none (everyone in the lobby, or #bench) */
static double reconnect_wait = 300, reconnect_timeout = 60;
static const char *irc_target = "#bench", *irc_oper = NULL;

/* ---- state ---- */
static Conn *conns;
static int epfd;
static long n_ready = 0, n_dead = 0, n_inflight = 0, n_ungreeted = 0;
static long reg_errors = 0, slow_connects = 0, connect_errors = 0;
static long pings = 0, bad_bench = 0, lines_in = 0, echoes = 0, reads = 0;
static long deliveries = 0, counting = 0, wrong_room = 0;
static long *room_ready; /* --rooms: registered clients (in their room) per room */
static long ws_bad_upgrades = 0, ws_bad_frames = 0, ws_pings = 0, ws_closes = 0, ws_fragments = 0;
static long long bytes_in = 0, ping_bytes = 0;
static double t_begin, t_last_delivery, t_last_ready = 0;
static int phase_reconnect = 0;
static long n_rereg = 0, n_backoff = 0, re_connects = 0;
static volatile sig_atomic_t restart_flag = 0;
static struct timespec restart_ts;
static char rbig[1 << 18];

/* Latency histogram in microseconds: exact below 128 us, then 64 buckets per
 * power of two (under 1.6 % relative error), up to 2^40 us. */
#define HBUCKETS (64 * 40 + 128)
static long hist[HBUCKETS];
static long hist_senders[HBUCKETS]; /* the part received by clients that also send */
static long hist_cross[HBUCKETS];   /* the part received on another port than the sender's */
static uint64_t lat_max_us = 0;

static int hbucket(uint64_t us) {
    if (us < 128) return (int)us;
    int msb = 63 - __builtin_clzll(us), shift = msb - 6;
    int b = shift * 64 + (int)(us >> shift);
    return b < HBUCKETS ? b : HBUCKETS - 1;
}
static double hvalue(int b) { /* middle of bucket b, in ms */
    if (b < 128) return b / 1000.0;
    int shift = b / 64 - 1;
    uint64_t lo = (uint64_t)(b - shift * 64) << shift;
    return (lo + ((1ull << shift) - 1) / 2.0) / 1000.0;
}
/* Parts of the histogram: every delivery, those received by clients that
 * also send, by the others, those received on another port (another node of
 * a cluster) than the sender's, and those on the sender's port. */
enum { ALL, SENDERS, OTHERS, CROSS, LOCAL };
/* The p-th percentile in ms of that part over the deliveries plus `lost`
 * lines never delivered, counted as slower than any: -2 when it falls among
 * those, -1 when there is nothing to count. */
static double hpct_of(double p, long lost, int part) {
    long h[HBUCKETS];
    for (int i = 0; i < HBUCKETS; i++)
        h[i] = part == SENDERS ? hist_senders[i]
             : part == OTHERS  ? hist[i] - hist_senders[i]
             : part == CROSS   ? hist_cross[i]
             : part == LOCAL   ? hist[i] - hist_cross[i]
                               : hist[i];
    long total = lost > 0 ? lost : 0;
    for (int i = 0; i < HBUCKETS; i++) total += h[i];
    if (!total) return -1;
    long want = (long)ceil(p / 100.0 * total), acc = 0;
    if (want < 1) want = 1;
    for (int i = 0; i < HBUCKETS; i++) {
        acc += h[i];
        if (acc >= want) return hvalue(i);
    }
    return -2;
}
static double hpct(double p, long lost) { return hpct_of(p, lost, ALL); }

static void json_ms(const char *key, double v) {
    if (v == -2) printf("\"%s\":null,", key);
    else printf("\"%s\":%.3f,", key, v);
}

/* --rooms: the room of client `id`, rooms of consecutive ids */
static int room_of(long id) { return nrooms ? (int)(id * nrooms / nclients) : 0; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}
static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* utime+stime of one process, seconds, and its system part in *sys */
static int proc_cpu(int pid, double *cpu, double *sys) {
    char p[64], buf[2048];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *s = strrchr(buf, ')');
    if (!s) return -1;
    unsigned long ut, st; /* fields 14 and 15 of /proc/PID/stat */
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return -1;
    *cpu = (ut + st) / (double)sysconf(_SC_CLK_TCK);
    *sys = st / (double)sysconf(_SC_CLK_TCK);
    return 0;
}

/* CPU seconds of the server processes (--pid, summed), -1 without any; the
 * system part in *sys when sys is not NULL */
static double server_cpu_split(double *sys) {
    if (!npids) return -1;
    double total = 0, total_sys = 0;
    for (int i = 0; i < npids; i++) {
        double c, s;
        if (!proc_cpu(pids[i], &c, &s)) {
            total += c;
            total_sys += s;
        }
    }
    if (sys) *sys = total_sys;
    return total;
}
static double server_cpu(void) { return server_cpu_split(NULL); }

/* a "Key:  123 kB" field of /proc/PID/status, summed over the server
 * processes (-1 without --pid) */
static long server_status(const char *key) {
    if (!npids) return -1;
    long total = -1;
    for (int i = 0; i < npids; i++) {
        char p[64], line[256];
        snprintf(p, sizeof p, "/proc/%d/status", pids[i]);
        FILE *f = fopen(p, "r");
        if (!f) continue;
        size_t kl = strlen(key);
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, key, kl) && line[kl] == ':') {
                total = (total < 0 ? 0 : total) + atol(line + kl + 1);
                break;
            }
        fclose(f);
    }
    return total;
}

/* "1,2,3" into at most max ints; returns how many */
static int parse_list(const char *v, int *out, int max) {
    int n = 0;
    for (const char *p = v; *p && n < max;) {
        out[n++] = atoi(p);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    return n;
}

static void ep_set(Conn *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void leave_registration(Conn *c) {
    if (c->state >= ST_CONNECTING && c->state < ST_READY) {
        n_inflight--;
        if (!c->greeted) n_ungreeted--;
    }
}

/* closed or waiting to reconnect: nothing more to read or write */
static int gone(const Conn *c) { return c->state == ST_DEAD || c->state == ST_BACKOFF; }

/* Close a client. In the reconnect phase it tries again after 100-250 ms
 * while it has tries left, as a real client would; otherwise it is dead. */
static void kill_conn(Conn *c) {
    if (gone(c) || c->state == ST_IDLE) return;
    leave_registration(c);
    if (c->state == ST_READY) {
        n_ready--;
        if (nrooms) room_ready[room_of(c->id)]--;
        if (c->dropped) n_rereg--;
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->plen = c->wlen = c->hyphens = c->joined = 0;
    c->upgraded = c->rlen = c->hlen = c->clen = c->msg_op = 0;
    c->left = 0;
    if (phase_reconnect && c->tries < reconnect_tries) {
        c->state = ST_BACKOFF;
        c->dropped = 1;
        c->retry_at = now() + 0.100 + 0.150 * drand48();
        n_backoff++;
        return;
    }
    c->state = ST_DEAD;
    n_dead++;
}

static void greet(Conn *c) {
    if (!c->greeted) {
        c->greeted = 1;
        n_ungreeted--;
        if (now() - c->t_start > 0.9) slow_connects++; /* a dropped SYN costs 1 s */
    }
}

static void become_ready(Conn *c) {
    greet(c);
    leave_registration(c);
    c->state = ST_READY;
    n_ready++;
    if (nrooms) room_ready[room_of(c->id)]++;
    if (c->dropped) n_rereg++;
    t_last_ready = now();
}

static void sendf(Conn *c, const char *fmt, ...);

/* The chat's registration is over: ready, or first into its room (--rooms) */
static void registered(Conn *c) {
    if (!nrooms) {
        become_ready(c);
        return;
    }
    c->state = ST_WAIT_ROOM;
    c->joined = c->hyphens = 0;
    sendf(c, "/join #r%d\n", room_of(c->id));
}

static void flush(Conn *c) {
    int off = 0;
    while (off < c->wlen) {
        ssize_t w = write(c->fd, c->wbuf + off, c->wlen - off);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            kill_conn(c);
            return;
        }
        off += (int)w;
    }
    memmove(c->wbuf, c->wbuf + off, c->wlen - off);
    c->wlen -= off;
    ep_set(c, c->wlen > 0);
}

static void send_raw(Conn *c, const char *s, int n) {
    if (gone(c)) return;
    if (c->wlen == 0) { /* fast path: straight to the kernel */
        ssize_t w = write(c->fd, s, n);
        if (w == n) return;
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) { kill_conn(c); return; }
            w = 0;
        }
        s += w;
        n -= (int)w;
    }
    if (c->wlen + n > c->wcap) {
        c->wcap = (c->wlen + n) * 2;
        c->wbuf = realloc(c->wbuf, c->wcap);
    }
    memcpy(c->wbuf + c->wlen, s, n);
    c->wlen += n;
    ep_set(c, 1);
}

/* ---- ws: SHA-1 and base64 for the upgrade, frames ---- */

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
enum { WS_CONT = 0, WS_TEXT = 1, WS_BINARY = 2, WS_CLOSE = 8, WS_PING = 9, WS_PONG = 10 };

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

/* SHA-1 (FIPS 180-4) of a short message: only the upgrade uses it */
static void sha1(const uint8_t *msg, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t total = ((len + 8) / 64 + 1) * 64;
    uint8_t *m = calloc(total, 1);
    memcpy(m, msg, len);
    m[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) m[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)m[off + 4 * i] << 24 | (uint32_t)m[off + 4 * i + 1] << 16 |
                   (uint32_t)m[off + 4 * i + 2] << 8 | m[off + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol32(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol32(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(m);
    for (int i = 0; i < 20; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

/* base64 (RFC 4648, padded) of n bytes into out, which gets a NUL */
static void base64(const uint8_t *in, int n, char *out) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int o = 0;
    for (int i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = 0;
}

/* xorshift64*: the masks and keys need to be unpredictable to a proxy, not
 * secret; seeded from the clock and pid in main() */
static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd32(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

/* One client frame, FIN set, masked with a fresh random mask (RFC 6455 5.3) */
static void ws_send(Conn *c, int op, const char *payload, int n) {
    char stack[8192 + 14], *f = n <= 8192 ? stack : malloc((size_t)n + 14);
    int h = 0;
    f[h++] = (char)(0x80 | op);
    if (n < 126) {
        f[h++] = (char)(0x80 | n);
    } else if (n < 65536) {
        f[h++] = (char)(0x80 | 126);
        f[h++] = (char)(n >> 8);
        f[h++] = (char)n;
    } else {
        f[h++] = (char)(0x80 | 127);
        for (int i = 7; i >= 0; i--) f[h++] = (char)((uint64_t)n >> (8 * i));
    }
    uint32_t m = rnd32();
    uint8_t mask[4] = {(uint8_t)(m >> 24), (uint8_t)(m >> 16), (uint8_t)(m >> 8), (uint8_t)m};
    memcpy(f + h, mask, 4);
    h += 4;
    for (int i = 0; i < n; i++) f[h + i] = (char)(payload[i] ^ mask[i & 3]);
    send_raw(c, f, h + n);
    if (f != stack) free(f);
}

/* Bytes of the chat dialect: as they are over TCP; over a WebSocket, each
 * line one text message without its "\n". */
static void send_bytes(Conn *c, const char *s, int n) {
    if (!ws) {
        send_raw(c, s, n);
        return;
    }
    while (n > 0 && !gone(c)) {
        const char *nl = memchr(s, '\n', n);
        int len = nl ? (int)(nl - s) : n;
        ws_send(c, WS_TEXT, s, len);
        if (!nl) break;
        s += len + 1;
        n -= len + 1;
    }
}

/* The upgrade request: no Origin (a non-browser client), a fresh key */
static void ws_upgrade(Conn *c) {
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rnd32();
        memcpy(raw + i, &r, 4);
    }
    base64(raw, 16, c->key);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     ws_path, host, ports[c->id % nports], c->key);
    send_raw(c, req, n);
}

static void sendf(Conn *c, const char *fmt, ...) {
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof buf) n = sizeof buf - 1;
    send_bytes(c, buf, n);
}

static int starts(const char *line, int len, const char *prefix) {
    int n = (int)strlen(prefix);
    return len >= n && !memcmp(line, prefix, n);
}

static const char *parse_u64(const char *p, const char *end, unsigned long long *out) {
    unsigned long long v = 0;
    const char *q = p;
    while (q < end && *q >= '0' && *q <= '9') v = v * 10 + (unsigned long long)(*q++ - '0');
    *out = v;
    return q > p ? q : NULL;
}

static void on_bench(Conn *c, const char *b, const char *end) {
    /* b points after "BENCH ": "<sender> <seq> <t_ns>" */
    unsigned long long sender, seq, t;
    const char *p = parse_u64(b, end, &sender);
    if (p && p < end && *p == ' ') p = parse_u64(p + 1, end, &seq);
    else p = NULL;
    if (p && p < end && *p == ' ') p = parse_u64(p + 1, end, &t);
    else p = NULL;
    if (!p) {
        bad_bench++;
        return;
    }
    if (!counting) return;
    if ((long long)sender == c->id) { /* a server that echoes to the sender */
        echoes++;
        return;
    }
    if (nrooms && (sender >= (unsigned long long)nclients || room_of((long)sender) != room_of(c->id))) {
        wrong_room++; /* a line of another room's sender */
        return;
    }
    uint64_t tn = now_ns();
    uint64_t us = tn > t ? (tn - t) / 1000 : 0;
    hist[hbucket(us)]++;
    if (c->sender) hist_senders[hbucket(us)]++;
    if ((long long)(sender % nports) != c->id % nports) hist_cross[hbucket(us)]++;
    if (us > lat_max_us) lat_max_us = us;
    deliveries++;
    t_last_delivery = tn / 1e9;
}

static void on_line(Conn *c, char *line, int len) {
    if (len && line[len - 1] == '\r') len--;
    lines_in++;
    if (!irc && len == 4 && !memcmp(line, "ping", 4)) {
        pings++;
        ping_bytes += ws ? 6 : 5; /* over a WebSocket: a 2-byte frame header, no "\n" */
        send_bytes(c, "pong\n", 5);
        return;
    }
    if (irc && starts(line, len, "PING")) {
        pings++;
        ping_bytes += len + 1;
        sendf(c, "PONG%.*s\r\n", len - 4, line + 4);
        return;
    }
    const char *b = memmem(line, len, "BENCH ", 6);
    if (b) {
        if (nrooms) { /* the line must name the receiver's room */
            char tag[48];
            int tl = snprintf(tag, sizeof tag, irc ? "PRIVMSG #r%d :" : "-#r%d ", room_of(c->id));
            if (!memmem(line, (size_t)(b - line), tag, (size_t)tl)) {
                if (counting) wrong_room++;
                return;
            }
        }
        on_bench(c, b + 6, line + len);
        return;
    }
    if (irc && c->oper == 1 && memmem(line, len, " 381 ", 5)) c->oper = 2;
    if (c->state == ST_READY) return;
    char nick[32];
    snprintf(nick, sizeof nick, "b%d", c->id);
    if (irc) {
        if (c->state == ST_WAIT_WELCOME) {
            if (memmem(line, len, " 001 ", 5)) {
                if (irc_until_001) { /* registered: RPL_WELCOME is enough */
                    become_ready(c);
                    return;
                }
                greet(c);
                if (irc_join && nrooms) sendf(c, "JOIN #r%d\r\n", room_of(c->id));
                else if (irc_join) sendf(c, "JOIN %s\r\n", irc_target);
                c->state = ST_WAIT_ACK;
            } else if (memmem(line, len, " 433 ", 5) || starts(line, len, "ERROR")) {
                reg_errors++;
                kill_conn(c);
            }
        } else if (c->state == ST_WAIT_ACK) {
            if (irc_join ? memmem(line, len, " 366 ", 5) != NULL
                         : memmem(line, len, " 376 ", 5) || memmem(line, len, " 422 ", 5))
                become_ready(c); /* end of NAMES after JOIN, or end of MOTD */
        }
        return;
    }
    switch (c->state) {
    case ST_WAIT_WELCOME: /* the welcome line, whatever its wording */
        greet(c);
        send_bytes(c, "/pseudo\n", 8);
        c->state = ST_WAIT_PROMPT;
        break;
    case ST_WAIT_PROMPT:
        if (starts(line, len, "Entrez") || starts(line, len, "entrez")) {
            sendf(c, "%s\n", nick);
            c->state = ST_WAIT_ACK;
        }
        break;
    case ST_WAIT_ACK:
        if (starts(line, len, "Rentrez") || starts(line, len, "Attention")) {
            reg_errors++;
            kill_conn(c);
        } else if (starts(line, len, "----")) {
            c->hyphens = 1;
            c->state = ST_WAIT_LIST;
        } else if (starts(line, len, "Bienvenue ") || starts(line, len, "bienvenue ")) {
            c->state = ST_WAIT_LIST;
        }
        break;
    case ST_WAIT_LIST:
        if (starts(line, len, "----")) {
            if (++c->hyphens == 2) registered(c);
        } else if (len && line[0] == '[') {
            registered(c); /* a server without a closing line: first chat line */
        }
        break;
    case ST_WAIT_ROOM: { /* "Salon courant : #rK", then the room's list block */
        char want[48];
        int wl = snprintf(want, sizeof want, "Salon courant : #r%d", room_of(c->id));
        if (!c->joined && len == wl && !memcmp(line, want, wl)) {
            c->joined = 1;
            c->hyphens = 0;
        } else if (c->joined && starts(line, len, "----")) {
            if (++c->hyphens == 2) become_ready(c);
        } else if (starts(line, len, "Erreur")) { /* a refused /join: no room */
            reg_errors++;
            kill_conn(c);
        }
        break;
    }
    default:
        break;
    }
}

/* Bytes of the chat or IRC dialect, cut into lines for on_line(); the
 * unfinished line stays in c->part for the next call. */
static void feed_lines(Conn *c, char *p, char *end) {
    if (c->plen) { /* finish the line left over from the last call */
        char *nl = memchr(p, '\n', end - p);
        int take = (int)((nl ? nl : end) - p);
        if (c->plen + take > 65536) { /* overlong line: drop it */
            c->plen = 0;
        } else {
            if (c->plen + take > c->pcap) {
                c->pcap = (c->plen + take) * 2;
                c->part = realloc(c->part, c->pcap);
            }
            memcpy(c->part + c->plen, p, take);
            c->plen += take;
        }
        if (!nl) return;
        int l = c->plen;
        c->plen = 0;
        on_line(c, c->part, l);
        if (gone(c)) return;
        p = nl + 1;
    }
    for (;;) {
        char *nl = memchr(p, '\n', end - p);
        if (!nl) break;
        on_line(c, p, (int)(nl - p));
        if (gone(c)) return;
        p = nl + 1;
    }
    if (p < end) {
        int rest = (int)(end - p);
        if (rest > c->pcap) {
            c->pcap = rest * 2;
            c->part = realloc(c->part, c->pcap);
        }
        memcpy(c->part, p, rest);
        c->plen = rest;
    }
}

static int ws_fail(Conn *c, long *counter) {
    (*counter)++;
    kill_conn(c);
    return -1;
}

/* The value of header `name` in an HTTP response (case-insensitive name),
 * trimmed, into out; 0 when absent */
static int http_header(const char *resp, const char *name, char *out, int cap) {
    size_t nl = strlen(name);
    for (const char *p = strstr(resp, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (strncasecmp(h, name, nl) || h[nl] != ':') continue;
        h += nl + 1;
        while (*h == ' ' || *h == '\t') h++;
        const char *e = strstr(h, "\r\n");
        int n = (int)(e - h);
        while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
        if (n >= cap) n = cap - 1;
        memcpy(out, h, n);
        out[n] = 0;
        return 1;
    }
    return 0;
}

/* Gather the upgrade's response; at its end check the 101 and the accept
 * key. Returns the bytes consumed from p, -1 if the client was closed. */
static int ws_response(Conn *c, const char *p, int n) {
    if (!c->resp) c->resp = malloc(4096);
    int take = n < 4095 - c->rlen ? n : 4095 - c->rlen;
    memcpy(c->resp + c->rlen, p, take);
    int before = c->rlen;
    c->rlen += take;
    c->resp[c->rlen] = 0;
    char *end = strstr(c->resp, "\r\n\r\n");
    if (!end) return c->rlen == 4095 ? ws_fail(c, &ws_bad_upgrades) : take;
    end[2] = 0; /* keep the last header's \r\n: http_header looks for it */
    char want[64], got[64], upgrade[32];
    uint8_t digest[20];
    char concat[64];
    snprintf(concat, sizeof concat, "%s%s", c->key, WS_GUID);
    sha1((const uint8_t *)concat, strlen(concat), digest);
    base64(digest, 20, want);
    if (strncmp(c->resp, "HTTP/1.1 101", 12) || !http_header(c->resp, "Sec-WebSocket-Accept", got, sizeof got) ||
        strcmp(got, want) || !http_header(c->resp, "Upgrade", upgrade, sizeof upgrade) ||
        strcasecmp(upgrade, "websocket")) {
        if (progress) fprintf(stderr, "chatbench: bad upgrade: %.200s\n", c->resp);
        return ws_fail(c, &ws_bad_upgrades);
    }
    c->upgraded = 1;
    return (int)(end + 4 - c->resp) - before; /* what follows is frames */
}

/* A frame is whole: act on it. Returns -1 if the client was closed. */
static int ws_frame_done(Conn *c) {
    switch (c->op) {
    case WS_TEXT:
    case WS_BINARY:
    case WS_CONT:
        if (c->fin) {
            int text = c->msg_op == WS_TEXT;
            c->msg_op = 0;
            if (text) {
                char nl[] = "\n";
                feed_lines(c, nl, nl + 1); /* the message is one line */
                if (gone(c)) return -1;
            }
        }
        return 0;
    case WS_PING:
        ws_pings++;
        ping_bytes += 2 + c->clen;
        ws_send(c, WS_PONG, (const char *)c->ctl, c->clen);
        return gone(c) ? -1 : 0;
    case WS_PONG:
        return 0;
    default: /* WS_CLOSE: answer with its status code, then close */
        ws_closes++;
        ws_send(c, WS_CLOSE, (const char *)c->ctl, c->clen >= 2 ? 2 : 0);
        kill_conn(c);
        return -1;
    }
}

/* Bytes from a WebSocket: the upgrade's response, then server frames,
 * whose text payloads go to feed_lines() as they come. */
static void ws_feed(Conn *c, char *p, char *end) {
    while (p < end) {
        if (!c->upgraded) {
            int used = ws_response(c, p, (int)(end - p));
            if (used < 0) return;
            p += used;
            continue;
        }
        if (c->left == 0 && c->hlen < 2) { /* a header: 2 bytes, then its length */
            c->hdr[c->hlen++] = (uint8_t)*p++;
            if (c->hlen < 2) continue;
        }
        int len7 = c->hdr[1] & 127;
        int need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
        if (c->hlen < need) {
            c->hdr[c->hlen++] = (uint8_t)*p++;
            if (c->hlen < need) continue;
        }
        if (c->hlen == need) { /* the header is whole */
            c->hlen = need + 1; /* mark it parsed until the frame ends */
            c->fin = c->hdr[0] >> 7;
            c->op = c->hdr[0] & 15;
            uint64_t n = (uint64_t)len7;
            if (len7 == 126) n = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
            if (len7 == 127) {
                n = 0;
                for (int i = 2; i < 10; i++) n = n << 8 | c->hdr[i];
            }
            int control = c->op >= 8;
            if ((c->hdr[0] & 0x70) || (c->hdr[1] & 0x80) || /* reserved bits; a masked server frame */
                (control && (!c->fin || n > 125)) || (c->op > 2 && c->op < 8) || c->op > 10 ||
                (c->op == WS_CONT && !c->msg_op) || ((c->op == WS_TEXT || c->op == WS_BINARY) && c->msg_op)) {
                ws_fail(c, &ws_bad_frames);
                return;
            }
            if (c->op == WS_TEXT || c->op == WS_BINARY) c->msg_op = c->op;
            if (c->op == WS_CONT) ws_fragments++;
            if (c->op != WS_CONT && !c->fin) ws_fragments++;
            c->left = n;
            c->clen = 0;
        }
        uint64_t take = (uint64_t)(end - p) < c->left ? (uint64_t)(end - p) : c->left;
        if (c->op >= 8) {
            memcpy(c->ctl + c->clen, p, take);
            c->clen += (int)take;
        } else if (c->msg_op == WS_TEXT && take) {
            feed_lines(c, p, p + take);
            if (gone(c)) return;
        }
        p += take;
        c->left -= take;
        if (c->left == 0) {
            c->hlen = 0;
            if (ws_frame_done(c) < 0) return;
        }
    }
}

static void on_readable(Conn *c) {
    for (int round = 0; round < 4; round++) {
        ssize_t r = read(c->fd, rbig, sizeof rbig);
        if (r == 0) { kill_conn(c); return; }
        if (r < 0) {
            if (errno != EAGAIN && errno != EINTR) kill_conn(c);
            return;
        }
        bytes_in += r;
        reads++;
        if (ws) ws_feed(c, rbig, rbig + r);
        else feed_lines(c, rbig, rbig + r);
        if (gone(c) || (size_t)r < sizeof rbig) return;
    }
}

static void start_connect(Conn *c) {
    if (phase_reconnect) {
        c->tries++;
        re_connects++;
    }
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("chatbench: socket (raise ulimit -n)");
        c->state = ST_DEAD;
        n_dead++;
        connect_errors++;
        return;
    }
    int one = 1;
    if (spread > 0) {
        int k = c->id / spread;
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | ((unsigned)(k / 250) << 8) | (unsigned)(k % 250 + 1));
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) perror("chatbench: bind");
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(ports[c->id % nports])};
    inet_pton(AF_INET, host, &a.sin_addr);
    c->t_start = now();
    c->state = ST_CONNECTING;
    c->greeted = 0;
    n_inflight++;
    n_ungreeted++;
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        connect_errors++; /* refused at once: retried in the reconnect phase */
        kill_conn(c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void on_event(Conn *c, uint32_t evs) {
    if (gone(c)) return;
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            connect_errors++;
            kill_conn(c);
            return;
        }
        c->state = ST_WAIT_WELCOME;
        ep_set(c, 0);
        if (irc) sendf(c, "NICK b%d\r\nUSER b%d 0 * :bench\r\n", c->id, c->id);
        else if (ws) ws_upgrade(c);
        if (!(evs & EPOLLIN)) return;
    }
    if (evs & EPOLLOUT) flush(c);
    if (!gone(c) && (evs & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(c);
}

static void poll_once(int ms) {
    struct epoll_event evs[1024];
    int n = epoll_wait(epfd, evs, 1024, ms);
    for (int i = 0; i < n; i++) on_event(evs[i].data.ptr, evs[i].events);
}

static int over_total(void) { return now() - t_begin > total_timeout; }

static volatile sig_atomic_t stop_flag = 0;
static void on_signal(int sig) {
    (void)sig;
    stop_flag = 1;
}
static void on_restart(int sig) { /* SIGUSR1: the new server listens */
    (void)sig;
    if (!restart_flag) clock_gettime(CLOCK_MONOTONIC, &restart_ts);
    restart_flag = 1;
}

/* reconnect: start the clients whose backoff has expired */
static void retry_due(void) {
    if (!n_backoff) return;
    double t = now();
    for (int i = 0; i < nclients; i++)
        if (conns[i].state == ST_BACKOFF && conns[i].retry_at <= t) {
            n_backoff--;
            start_connect(&conns[i]);
        }
}

static void report_states(const char *phase, double el, int upto) {
    long st[ST_DEAD + 1] = {0};
    for (int i = 0; i < upto; i++) st[conns[i].state]++;
    fprintf(stderr,
            "chatbench: %s %.1f s ready %ld dead %ld connecting %ld welcome %ld prompt %ld ack %ld list %ld "
            "room %ld backoff %ld server_cpu %.2f\n",
            phase, el, n_ready, n_dead, st[ST_CONNECTING], st[ST_WAIT_WELCOME], st[ST_WAIT_PROMPT], st[ST_WAIT_ACK],
            st[ST_WAIT_LIST], st[ST_WAIT_ROOM], st[ST_BACKOFF], server_cpu());
}

static void usage(void) {
    fprintf(stderr,
            "usage: chatbench [--host 127.0.0.1] --port P[,P2...] [--dialect chat|ws|irc] [--path /ws]\n"
            "  --clients N\n"
            "  [--inflight K] [--accept-window A] [--connect-rate R] [--spread K]\n"
            "  [--idle S] [--senders S --rate R --duration D --drain T] [--pad BYTES]\n"
            "  [--pid SERVER_PID[,PID2...]] [--reg-timeout S] [--settle S] [--timeout S]\n"
            "  [--irc-join 0|1] [--irc-until-001 0|1] [--irc-target '#bench'|'$server.name']\n"
            "  [--irc-oper NAME:PASS] [--reconnect TRIES --reconnect-wait S --reconnect-timeout S]\n"
            "  [--rooms N] [--progress 1] [--hold-stdin 1]\n"
            "  --inflight 0, --accept-window 0, --connect-rate 0: no bound (a herd)\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (i + 1 >= argc) usage();
        char *v = argv[++i];
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) nports = parse_list(v, ports, 16);
        else if (!strcmp(a, "--dialect")) {
            irc = !strcmp(v, "irc");
            ws = !strcmp(v, "ws");
            if (!irc && !ws && strcmp(v, "chat")) usage();
        } else if (!strcmp(a, "--path")) ws_path = v;
        else if (!strcmp(a, "--clients")) nclients = atoi(v);
        else if (!strcmp(a, "--inflight")) inflight_max = atoi(v);
        else if (!strcmp(a, "--accept-window")) accept_window = atoi(v);
        else if (!strcmp(a, "--connect-rate")) connect_rate = atof(v);
        else if (!strcmp(a, "--spread")) spread = atoi(v);
        else if (!strcmp(a, "--idle")) idle_s = atof(v);
        else if (!strcmp(a, "--senders")) nsenders = atoi(v);
        else if (!strcmp(a, "--rate")) rate = atof(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--drain")) drain_s = atof(v);
        else if (!strcmp(a, "--pad")) msg_pad = atoi(v);
        else if (!strcmp(a, "--pid")) npids = parse_list(v, pids, 16);
        else if (!strcmp(a, "--reg-timeout")) reg_timeout = atof(v);
        else if (!strcmp(a, "--settle")) settle_s = atof(v);
        else if (!strcmp(a, "--timeout")) total_timeout = atof(v);
        else if (!strcmp(a, "--irc-join")) irc_join = atoi(v);
        else if (!strcmp(a, "--irc-until-001")) irc_until_001 = atoi(v);
        else if (!strcmp(a, "--reconnect")) reconnect_tries = atoi(v);
        else if (!strcmp(a, "--reconnect-wait")) reconnect_wait = atof(v);
        else if (!strcmp(a, "--reconnect-timeout")) reconnect_timeout = atof(v);
        else if (!strcmp(a, "--progress")) progress = atoi(v);
        else if (!strcmp(a, "--rooms")) nrooms = atoi(v);
        else if (!strcmp(a, "--hold-stdin")) hold_stdin = atoi(v);
        else if (!strcmp(a, "--irc-target")) irc_target = v;
        else if (!strcmp(a, "--irc-oper")) irc_oper = v;
        else usage();
    }
    struct in_addr target;
    if (inet_pton(AF_INET, host, &target) != 1 || (ntohl(target.s_addr) >> 24) != 127) {
        fprintf(stderr, "chatbench: --host must be an IPv4 loopback address (127.0.0.0/8)\n");
        return 2;
    }
    if (nclients < 1 || rate <= 0 || inflight_max < 0 || accept_window < 0 || reconnect_tries < 0 || nports < 1) usage();
    if (nsenders > nclients) nsenders = nclients;
    if (nrooms < 0 || nrooms > nclients) {
        fprintf(stderr, "chatbench: --rooms takes 0 (none) to the number of clients\n");
        return 2;
    }
    room_ready = calloc(nrooms > 0 ? nrooms : 1, sizeof *room_ready);
    if (msg_pad > 4000) msg_pad = 4000;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGUSR1, on_restart);
    srand48((long)getpid() ^ (long)now_ns());
    rng_state ^= now_ns() * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid() << 32;
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((long)rl.rlim_cur < nclients + 16)
        fprintf(stderr, "chatbench: warning: open-file limit %ld is below %d clients\n", (long)rl.rlim_cur, nclients);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc(nclients, sizeof *conns);
    for (int i = 0; i < nclients; i++) conns[i].id = i;
    t_begin = now();

    /* ---- phase reg ---- */
    double rss0 = server_status("VmRSS");
    double scpu0 = server_cpu(), tcpu0 = self_cpu(), t0 = now();
    int started = 0;
    double next_report = t0 + 1, t_connects = -1;
    while (n_ready + n_dead < nclients && !stop_flag) {
        double el = now() - t0;
        if (progress && now() >= next_report) {
            report_states("reg", el, started);
            next_report += 1;
        }
        while (started < nclients && (inflight_max <= 0 || n_inflight < inflight_max) &&
               (accept_window <= 0 || n_ungreeted < accept_window) &&
               (connect_rate <= 0 || started < el * connect_rate + 1))
            start_connect(&conns[started++]);
        if (started == nclients && t_connects < 0) t_connects = now() - t0;
        poll_once(started < nclients ? 1 : 5);
        if (now() - t0 > reg_timeout || over_total()) break;
    }
    double t_reg = now() - t0, scpu_reg = server_cpu() - scpu0, tcpu_reg = self_cpu() - tcpu0;
    long rss_reg = server_status("VmRSS");
    /* where the clients not registered by the deadline got stuck: a client
     * "connected" but never welcomed is the mark of a listen queue that
     * overflowed (under SYN cookies the kernel drops the final ACK, the
     * client believes it is connected and waits for a server that never
     * accepted it) */
    long st[ST_DEAD + 1] = {0};
    for (int i = 0; i < nclients; i++) st[conns[i].state]++;
    long stuck_idle = st[ST_IDLE], stuck_connecting = st[ST_CONNECTING], stuck_unwelcomed = st[ST_WAIT_WELCOME];
    long stuck_registering = st[ST_WAIT_PROMPT] + st[ST_WAIT_ACK] + st[ST_WAIT_LIST] + st[ST_WAIT_ROOM];
    long stuck_joining = st[ST_WAIT_ROOM]; /* --rooms: /join sent, its answer not read (also registering) */
    long stuck_upgrading = 0; /* ws: connected, no 101 yet (also counted as never welcomed) */
    for (int i = 0; ws && i < nclients; i++) stuck_upgrading += conns[i].state == ST_WAIT_WELCOME && !conns[i].upgraded;
    double reg_last = n_ready ? t_last_ready - t0 : -1;
    fprintf(stderr, "chatbench: registered %ld/%d in %.2f s (dead %ld)\n", n_ready, nclients, t_reg, n_dead);

    /* let the list blocks and join notices drain: wait for a quiet spell */
    double ts = now();
    long long seen = bytes_in - ping_bytes;
    double quiet_since = now();
    while (!stop_flag && now() - ts < 30 && now() - quiet_since < settle_s && !over_total()) {
        poll_once(10);
        if (bytes_in - ping_bytes != seen) { /* pings do not count as traffic */
            seen = bytes_in - ping_bytes;
            quiet_since = now();
        }
    }
    double t_settle = now() - ts;

    /* ---- phase reconnect ---- */
    long re_target = -1, re_lost = -1, re_dead = 0, re_refused = 0, re_unwelcomed = 0;
    double re_s = -1, re_wait_s = -1, re_connects_per = -1;
    if (reconnect_tries > 0 && !stop_flag) {
        for (int i = 0; i < nclients; i++) /* only registered clients take part */
            if (conns[i].state != ST_READY) kill_conn(&conns[i]);
        re_target = n_ready;
        long dead0 = n_dead, errors0 = connect_errors;
        phase_reconnect = 1;
        printf("{\"registered\":%ld}\n", n_ready);
        fflush(stdout);
        double tw = now(), t_sig = -1;
        next_report = tw + 1;
        while (!stop_flag && !over_total()) {
            if (restart_flag && t_sig < 0) {
                t_sig = restart_ts.tv_sec + restart_ts.tv_nsec / 1e9;
                re_wait_s = t_sig - tw;
            }
            if (t_sig < 0 && now() - tw > reconnect_wait) break; /* no restart came */
            if (t_sig >= 0 && (n_rereg + n_dead - dead0 >= re_target || now() - t_sig > reconnect_timeout)) break;
            if (progress && now() >= next_report) {
                report_states("reconnect", now() - tw, nclients);
                next_report += 1;
            }
            retry_due();
            poll_once(5);
        }
        phase_reconnect = 0;
        if (t_sig >= 0 && n_rereg == re_target) re_s = t_last_ready - t_sig;
        else if (t_sig >= 0) re_s = now() - t_sig;
        re_lost = re_target - n_rereg;
        re_dead = n_dead - dead0;
        re_refused = connect_errors - errors0;
        for (int i = 0; i < nclients; i++) re_unwelcomed += conns[i].state == ST_WAIT_WELCOME;
        re_connects_per = re_target > 0 ? (double)re_connects / re_target : 0;
        fprintf(stderr, "chatbench: re-registered %ld/%ld in %.2f s after the restart (%ld connects)\n", n_rereg,
                re_target, re_s, re_connects);
    }

    /* ---- phase idle ---- */
    double idle_cpu = -1, idle_wall = 0, tcpu_idle = -1;
    long idle_pings = 0, rss_idle_max = -1, rss_idle_end = -1, idle_dead = 0;
    long ctx0 = -1, ctx_idle = -1;
    if (idle_s > 0 && !stop_flag) {
        long p0 = pings, d0 = n_dead;
        ctx0 = server_status("voluntary_ctxt_switches");
        double c0 = server_cpu(), tc0 = self_cpu(), t1 = now(), next_sample = t1;
        while (!stop_flag && now() - t1 < idle_s && !over_total()) {
            poll_once(20);
            if (now() >= next_sample) {
                long r = server_status("VmRSS");
                if (r > rss_idle_max) rss_idle_max = r;
                next_sample += 1.0;
            }
        }
        idle_wall = now() - t1;
        idle_cpu = server_cpu() - c0;
        tcpu_idle = self_cpu() - tc0;
        idle_pings = pings - p0;
        idle_dead = n_dead - d0;
        rss_idle_end = server_status("VmRSS");
        if (rss_idle_end > rss_idle_max) rss_idle_max = rss_idle_end;
        long ctx1 = server_status("voluntary_ctxt_switches");
        if (ctx0 >= 0 && ctx1 >= 0) ctx_idle = ctx1 - ctx0;
    }

    /* ---- phase send ---- */
    int ns = 0;
    int *sidx = calloc(nsenders > 0 ? nsenders : 1, sizeof *sidx);
    for (int k = 0; k < nsenders; k++) { /* spread senders over the id range */
        int want = (int)((long)k * nclients / nsenders);
        for (int j = 0; j < nclients; j++) {
            int i = (want + j) % nclients;
            int dup = 0;
            for (int q = 0; q < ns; q++) dup |= sidx[q] == i;
            if (conns[i].state == ST_READY && !dup) {
                conns[i].sender = 1;
                sidx[ns++] = i;
                break;
            }
        }
    }
    long opers = 0;
    if (irc && irc_oper && ns > 0) { /* a server-mask target needs IRC operators */
        char name[128], pass[128];
        if (sscanf(irc_oper, "%127[^:]:%127s", name, pass) != 2) usage();
        for (int k = 0; k < ns; k++) {
            conns[sidx[k]].oper = 1;
            sendf(&conns[sidx[k]], "OPER %s %s\r\n", name, pass);
        }
        double t3 = now();
        while (!stop_flag && now() - t3 < 10 && !over_total()) {
            opers = 0;
            for (int k = 0; k < ns; k++) opers += conns[sidx[k]].oper == 2;
            if (opers == ns) break;
            poll_once(10);
        }
    }
    long per_sender = (long)llround(rate * duration), total_sent = 0, receivers = n_ready;
    long expected = 0, send_dead = 0;
    double t_send = 0, t_sending = 0, scpu_send = -1, tcpu_send = -1, window = 0, ssys_send = -1;
    if (ns > 0 && !stop_flag) {
        char pad[4096];
        memset(pad, 'x', sizeof pad);
        pad[msg_pad] = 0;
        long d0 = n_dead;
        double sys0 = 0, sys1 = 0;
        double c0 = server_cpu_split(&sys0), tc0 = self_cpu(), t2 = now();
        t_last_delivery = t2;
        counting = 1;
        for (int k = 0; k < ns; k++) conns[sidx[k]].next_send = t2 + (double)k / ns / rate;
        double all_sent_at = -1;
        while (!stop_flag && !over_total()) {
            double tn = now(), next = tn + 0.005;
            int all_sent = 1;
            for (int k = 0; k < ns; k++) {
                Conn *c = &conns[sidx[k]];
                if (c->state != ST_READY || c->sent >= per_sender) continue;
                all_sent = 0;
                if (c->next_send <= tn) {
                    if (irc && nrooms)
                        sendf(c, "PRIVMSG #r%d :BENCH %d %ld %llu %s\r\n", room_of(c->id), c->id, c->sent,
                              (unsigned long long)now_ns(), pad);
                    else if (irc)
                        sendf(c, "PRIVMSG %s :BENCH %d %ld %llu %s\r\n", irc_target, c->id, c->sent,
                              (unsigned long long)now_ns(), pad);
                    else
                        sendf(c, "BENCH %d %ld %llu %s\n", c->id, c->sent, (unsigned long long)now_ns(), pad);
                    c->sent++;
                    total_sent++;
                    expected += (nrooms ? room_ready[room_of(c->id)] : n_ready) - 1;
                    c->next_send += 1.0 / rate;
                }
                if (c->sent < per_sender && c->next_send < next) next = c->next_send;
            }
            if (all_sent && all_sent_at < 0) all_sent_at = now();
            if (all_sent && deliveries >= expected) break;
            if (all_sent_at >= 0 && now() - all_sent_at > drain_s) break;
            int ms = (int)ceil((next - now()) * 1000);
            poll_once(all_sent ? 20 : (ms < 0 ? 0 : ms > 5 ? 5 : ms));
        }
        counting = 0;
        double t_end = now();
        t_send = t_end - t2;
        t_sending = (all_sent_at >= 0 ? all_sent_at : t_end) - t2;
        scpu_send = server_cpu_split(&sys1) - c0;
        ssys_send = sys1 - sys0;
        tcpu_send = self_cpu() - tc0;
        window = (deliveries >= expected ? t_last_delivery : t_end) - t2;
        if (window < t_sending) window = t_sending;
        send_dead = n_dead - d0;
    }

    double cpu_total = self_cpu();
    printf("{\"dialect\":\"%s\",\"clients\":%d,\"registered\":%ld,\"dead\":%ld,\"reg_errors\":%ld,"
           "\"connect_errors\":%ld,\"slow_connects\":%ld,\"reg_s\":%.3f,\"reg_server_cpu_s\":%.3f,"
           "\"reg_tool_cpu_s\":%.3f,\"rss_start_kb\":%.0f,\"rss_reg_kb\":%ld,\"settle_s\":%.2f,",
           irc ? "irc" : ws ? "ws" : "chat", nclients, n_ready, n_dead, reg_errors, connect_errors, slow_connects, t_reg,
           scpu_reg, tcpu_reg, rss0, rss_reg, t_settle);
    printf("\"reg_last_s\":%.3f,\"connects_s\":%.3f,\"stuck_idle\":%ld,\"stuck_connecting\":%ld,"
           "\"stuck_unwelcomed\":%ld,\"stuck_registering\":%ld,\"stuck_upgrading\":%ld,\"stuck_joining\":%ld,"
           "\"rooms\":%d,\"wrong_room\":%ld,",
           reg_last, t_connects, stuck_idle, stuck_connecting, stuck_unwelcomed, stuck_registering, stuck_upgrading,
           stuck_joining, nrooms, wrong_room);
    printf("\"ws_bad_upgrades\":%ld,\"ws_bad_frames\":%ld,\"ws_pings\":%ld,\"ws_closes\":%ld,"
           "\"ws_fragments\":%ld,",
           ws_bad_upgrades, ws_bad_frames, ws_pings, ws_closes, ws_fragments);
    printf("\"re_target\":%ld,\"re_registered\":%ld,\"re_lost\":%ld,\"re_dead\":%ld,\"re_s\":%.3f,"
           "\"re_wait_s\":%.3f,\"re_connects\":%ld,\"re_connects_per_client\":%.2f,\"re_refused\":%ld,"
           "\"re_unwelcomed\":%ld,",
           re_target, re_target >= 0 ? n_rereg : -1, re_lost, re_dead, re_s, re_wait_s, re_connects, re_connects_per,
           re_refused, re_unwelcomed);
    printf("\"idle_s\":%.2f,\"idle_server_cpu_s\":%.3f,\"idle_tool_cpu_s\":%.3f,\"idle_pings\":%ld,"
           "\"idle_dead\":%ld,\"idle_rss_max_kb\":%ld,\"idle_rss_end_kb\":%ld,\"idle_wakeups\":%ld,",
           idle_wall, idle_cpu, tcpu_idle, idle_pings, idle_dead, rss_idle_max, rss_idle_end, ctx_idle);
    printf("\"senders\":%d,\"rate\":%.3f,\"duration\":%.2f,\"receivers\":%ld,\"sent\":%ld,\"expected\":%ld,"
           "\"delivered\":%ld,\"send_dead\":%ld,\"send_s\":%.3f,\"sending_s\":%.3f,\"window_s\":%.3f,"
           "\"send_server_cpu_s\":%.3f,\"send_server_sys_s\":%.3f,\"send_tool_cpu_s\":%.3f,\"deliveries_per_s\":%.0f,"
           "\"deliveries_per_cpu_s\":%.0f,\"max_ms\":%.3f,",
           ns, rate, duration, receivers, total_sent, expected, deliveries, send_dead, t_send, t_sending, window,
           scpu_send, ssys_send, tcpu_send, window > 0 ? deliveries / window : 0,
           scpu_send > 0 ? deliveries / scpu_send : -1, lat_max_us / 1000.0);
    json_ms("p50_ms", hpct(50, expected - deliveries));
    json_ms("p99_ms", hpct(99, expected - deliveries));
    /* the same among senders and among the others: a server whose small
     * writes wait for delayed ACKs (Nagle) shows it on clients that also send */
    json_ms("p99_senders_ms", hpct_of(99, 0, SENDERS));
    json_ms("p99_others_ms", hpct_of(99, 0, OTHERS));
    /* with several ports (a cluster's nodes): what crossing nodes adds */
    json_ms("p50_cross_ms", hpct_of(50, 0, CROSS));
    json_ms("p99_cross_ms", hpct_of(99, 0, CROSS));
    json_ms("p50_local_ms", hpct_of(50, 0, LOCAL));
    json_ms("p99_local_ms", hpct_of(99, 0, LOCAL));
    printf("\"pings\":%ld,\"reads\":%ld,\"lines_in\":%ld,\"bytes_in\":%lld,\"bad_bench\":%ld,\"echoes\":%ld,\"opers\":%ld,"
           "\"tool_cpu_s\":%.3f,\"wall_s\":%.3f,\"rss_end_kb\":%ld,\"hwm_kb\":%ld,\"stopped\":%s}\n",
           pings, reads, lines_in, bytes_in, bad_bench, echoes, opers, cpu_total, now() - t_begin, server_status("VmRSS"),
           server_status("VmHWM"), stop_flag ? "true" : "false");
    fflush(stdout);
    if (hold_stdin) {
        /* Keep every connection open until the caller has stopped the server
         * and closes our standard input (60 s at most): 10,000 clients
         * leaving at once would make a server announce 50 million departures. */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        int hold = epoll_create1(EPOLL_CLOEXEC);
        double t = now();
        char b[256];
        int ok = epoll_ctl(hold, EPOLL_CTL_ADD, 0, &ev) == 0; /* not a pipe: no hold */
        while (ok && now() - t < 60 && !stop_flag)
            if (epoll_wait(hold, &ev, 1, 100) > 0 && read(0, b, sizeof b) <= 0) break;
    }
    return 0;
}
