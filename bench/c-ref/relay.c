// A minimal C relay: the benchmark's ceiling for fan-out (bench/README.md, `--topologies c-ref`). NOT a product.
//
//   gcc -O2 -Wall -Wextra -o relay relay.c
//   relay <listen-port> <upstream-host> <upstream-port>
//
// What it does: listens on 127.0.0.1:<listen-port>; connects to the master, PING / REPLCONF listening-port /
// REPLCONF capa eof capa psync2 / PSYNC ? -1, takes +FULLRESYNC and the RDB ($<len> or diskless $EOF:<mark>) into
// memory, then read()s the replication stream straight into the tail of one append-only buffer (address space
// reserved once, committed in 64 MiB steps: the stream is never copied), REPLCONF ACK upstream once a second.
// Downstream: PING, REPLCONF, AUTH, SELECT, INFO, PSYNC / SYNC. A replica gets +FULLRESYNC with the master's replid
// and FULLRESYNC offset, the stored RDB, then the stream from buffer position 0 through its own cursor. On every
// epoll turn: read the upstream (at most 4 MiB), then at most one write() of at most 256 KiB per socket with
// something to send; a socket that is full waits for EPOLLOUT (edge-triggered).
//
// What it does not do: no disk, the whole stream stays in memory until exit (a stream larger than the reserved
// address space ends the program); no parsing of the stream; no partial resync (every PSYNC is a full resync
// from the one RDB taken at start); no reconnect (losing the master ends the program with status 1); no AUTH to
// the master, no limits, no timeouts. SIGTERM / SIGINT: exit 0.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WRITE_CAP (256u * 1024u)             // bytes per socket per loop turn, at most
#define UP_READ_CAP (4u * 1024u * 1024u)     // upstream bytes per loop turn, at most
#define COMMIT_STEP ((size_t)64 << 20)       // the stream buffer is made writable this much at a time
#define DEFAULT_RESERVE_GB 64                // address space reserved for the stream (CREF_RESERVE_GB)
#define MAX_INPUT (1u << 20)                 // a client command larger than this closes the client
#define MAX_ARGS 16                          // arguments kept per command (the rest are skipped)
#define MARK_LEN 40

enum up_state { UP_PING, UP_PORT, UP_CAPA, UP_PSYNC, UP_RDBHDR, UP_RDB, UP_STREAM };

struct client {
  int fd;
  int dead;
  int blocked;      // the last write() did not take everything: wait for EPOLLOUT
  int replica;      // after PSYNC / SYNC
  size_t idx;       // position in clients[]
  char *in;         // command input (not used once a replica)
  size_t in_len, in_cap;
  char *out;        // replies, and the +FULLRESYNC / $<len> header of a replica
  size_t out_pos, out_len, out_cap;
  size_t rdb_pos;   // bytes of the RDB sent
  size_t cursor;    // bytes of the stream buffer sent
};

static volatile sig_atomic_t stop_requested;
static int listen_port, epfd;
static const char *up_host;
static int up_port;

// Upstream.
static int up_fd = -1;
static enum up_state up_state = UP_PING;
static char up_in[65536];
static size_t up_in_len;
static char up_out[4096];
static size_t up_out_len;
static char master_replid[MARK_LEN + 1] = "0000000000000000000000000000000000000000";
static long long fullresync_offset;
static int link_up;
static long long last_ack_ms;

// The RDB, kept for every replica.
static char *rdb;
static size_t rdb_len, rdb_cap;
static long long rdb_expect;  // -1: ends with the EOF mark
static char eof_mark[MARK_LEN];

// The stream: one append-only buffer.
static char *sbuf;
static size_t sbuf_len, sbuf_committed, sbuf_reserved;

static struct client **clients;
static size_t nclients, clients_cap, nreplicas;

static int tag_listen, tag_up;  // epoll data.ptr of the listening and upstream sockets

static void vnote(const char *fmt, va_list ap) {
  fprintf(stderr, "c-ref: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

static void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vnote(fmt, ap);
  va_end(ap);
}

static void fatal(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vnote(fmt, ap);
  va_end(ap);
  exit(1);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) fatal("out of memory (%zu bytes)", n);
  return q;
}

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL, 0);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) fatal("fcntl: %s", strerror(errno));
}

static void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ---------------------------------------------------------------- the stream buffer
static void sbuf_reserve(void) {
  const char *env = getenv("CREF_RESERVE_GB");
  size_t gb = env && atol(env) > 0 ? (size_t)atol(env) : DEFAULT_RESERVE_GB;
  for (; gb >= 1; gb /= 2) {
    size_t bytes = gb << 30;
    void *p = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
      sbuf = p;
      sbuf_reserved = bytes;
      return;
    }
  }
  fatal("cannot reserve address space for the stream buffer");
}

/** Makes at least `need` bytes after the tail writable; 0 if the reservation is used up. */
static int sbuf_room(size_t need) {
  while (sbuf_committed - sbuf_len < need) {
    if (sbuf_committed == sbuf_reserved) return sbuf_committed > sbuf_len;
    size_t step = COMMIT_STEP;
    if (step > sbuf_reserved - sbuf_committed) step = sbuf_reserved - sbuf_committed;
    if (mprotect(sbuf + sbuf_committed, step, PROT_READ | PROT_WRITE) != 0) fatal("mprotect: %s", strerror(errno));
    sbuf_committed += step;
  }
  return 1;
}

/** Bytes that arrived with the end of the RDB in one read (a copy once, at the switch to the stream). */
static void sbuf_append(const char *p, size_t n) {
  while (n > 0) {
    if (!sbuf_room(n)) fatal("stream buffer full (%zu bytes reserved; CREF_RESERVE_GB)", sbuf_reserved);
    size_t k = sbuf_committed - sbuf_len < n ? sbuf_committed - sbuf_len : n;
    memcpy(sbuf + sbuf_len, p, k);
    sbuf_len += k;
    p += k;
    n -= k;
  }
}

// ---------------------------------------------------------------- upstream
static void up_flush(void) {
  while (up_out_len > 0) {
    ssize_t w = write(up_fd, up_out, up_out_len);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      fatal("upstream write: %s", strerror(errno));
    }
    memmove(up_out, up_out + w, up_out_len - (size_t)w);
    up_out_len -= (size_t)w;
  }
}

/** Sends a command as a RESP multibulk (NULL-terminated arguments). */
static void up_command(const char *first, ...) {
  const char *args[8];
  int argc = 0;
  va_list ap;
  va_start(ap, first);
  for (const char *a = first; a && argc < 8; a = va_arg(ap, const char *)) args[argc++] = a;
  va_end(ap);
  char buf[512];
  int len = snprintf(buf, sizeof buf, "*%d\r\n", argc);
  for (int i = 0; i < argc; i++) len += snprintf(buf + len, sizeof buf - (size_t)len, "$%zu\r\n%s\r\n", strlen(args[i]), args[i]);
  if ((size_t)len >= sizeof buf || up_out_len + (size_t)len > sizeof up_out) fatal("upstream output overflow");
  memcpy(up_out + up_out_len, buf, (size_t)len);
  up_out_len += (size_t)len;
  up_flush();
}

static long long stream_offset(void) {
  return fullresync_offset + (long long)sbuf_len;
}

static void up_ack(void) {
  char off[32];
  snprintf(off, sizeof off, "%lld", stream_offset());
  up_command("REPLCONF", "ACK", off, NULL);
  last_ack_ms = now_ms();
}

static void rdb_done(size_t extra_at, size_t extra_len) {
  up_state = UP_STREAM;
  link_up = 1;
  note("RDB received: %zu bytes; streaming from offset %lld", rdb_len, fullresync_offset);
  if (extra_len) sbuf_append(rdb + extra_at, extra_len);
  // A master that sent a diskless RDB starts the stream only after the replica's first ACK.
  up_ack();
}

/** `n` more RDB bytes were placed at rdb + rdb_len. */
static void rdb_got(size_t n) {
  if (rdb_expect >= 0) {
    rdb_len += n;
    if ((long long)rdb_len == rdb_expect) rdb_done(0, 0);
    return;
  }
  // Diskless: look for the mark in the new bytes and the MARK_LEN - 1 before them.
  size_t from = rdb_len > MARK_LEN - 1 ? rdb_len - (MARK_LEN - 1) : 0;
  size_t total = rdb_len + n;
  char *m = memmem(rdb + from, total - from, eof_mark, MARK_LEN);
  if (!m) {
    rdb_len = total;
    return;
  }
  rdb_len = (size_t)(m - rdb);
  rdb_done(rdb_len + MARK_LEN, total - rdb_len - MARK_LEN);
}

static void rdb_ensure(size_t free_bytes) {
  if (rdb_cap - rdb_len >= free_bytes) return;
  size_t cap = rdb_cap ? rdb_cap : 1 << 20;
  while (cap - rdb_len < free_bytes) cap *= 2;
  rdb = xrealloc(rdb, cap);
  rdb_cap = cap;
}

/** Handshake bytes that belong to the RDB (and maybe the stream after it). */
static void rdb_feed(const char *p, size_t n) {
  if (n == 0) return;
  if (rdb_expect >= 0) {
    size_t want = (size_t)rdb_expect - rdb_len;
    size_t k = n < want ? n : want;
    memcpy(rdb + rdb_len, p, k);
    rdb_got(k);
    if (k < n) sbuf_append(p + k, n - k);
    return;
  }
  rdb_ensure(n);
  memcpy(rdb + rdb_len, p, n);
  rdb_got(n);
}

static void up_line(char *line, size_t len) {
  char port[16];
  switch (up_state) {
    case UP_PING:
      if (line[0] == '-') note("upstream PING: %s", line);
      snprintf(port, sizeof port, "%d", listen_port);
      up_command("REPLCONF", "listening-port", port, NULL);
      up_state = UP_PORT;
      break;
    case UP_PORT:
      up_command("REPLCONF", "capa", "eof", "capa", "psync2", NULL);
      up_state = UP_CAPA;
      break;
    case UP_CAPA:
      up_command("PSYNC", "?", "-1", NULL);
      up_state = UP_PSYNC;
      break;
    case UP_PSYNC: {
      char id[MARK_LEN + 1];
      long long off;
      if (sscanf(line, "+FULLRESYNC %40s %lld", id, &off) != 2 || strlen(id) != MARK_LEN) fatal("upstream PSYNC: unexpected reply '%s'", line);
      memcpy(master_replid, id, sizeof id);
      fullresync_offset = off;
      note("FULLRESYNC %s %lld", master_replid, fullresync_offset);
      up_state = UP_RDBHDR;
      break;
    }
    case UP_RDBHDR:
      if (line[0] != '$') fatal("upstream: expected the RDB, got '%s'", line);
      if (strncmp(line, "$EOF:", 5) == 0) {
        if (len != 5 + MARK_LEN) fatal("upstream: bad EOF mark '%s'", line);
        memcpy(eof_mark, line + 5, MARK_LEN);
        rdb_expect = -1;
        rdb_ensure(1 << 20);
      } else {
        char *end;
        rdb_expect = strtoll(line + 1, &end, 10);
        if (*end || rdb_expect < 0) fatal("upstream: bad RDB length '%s'", line);
        rdb_ensure((size_t)rdb_expect + 1);
      }
      up_state = UP_RDB;
      if (rdb_expect == 0) rdb_done(0, 0);
      break;
    default:
      break;
  }
}

/** Handshake lines in up_in; keepalive newlines are skipped; what follows the RDB header goes to the RDB. */
static void up_parse_handshake(void) {
  size_t pos = 0;
  while (up_state < UP_RDB) {
    char *nl = memchr(up_in + pos, '\n', up_in_len - pos);
    if (!nl) break;
    size_t end = (size_t)(nl - up_in);
    size_t len = end - pos;
    char *line = up_in + pos;
    if (len > 0 && line[len - 1] == '\r') len--;
    line[len] = 0;
    pos = end + 1;
    if (len > 0) up_line(line, len);
  }
  if (up_state == UP_RDB) {
    rdb_feed(up_in + pos, up_in_len - pos);
    up_in_len = 0;
  } else if (up_state == UP_STREAM) {
    sbuf_append(up_in + pos, up_in_len - pos);
    up_in_len = 0;
  } else {
    memmove(up_in, up_in + pos, up_in_len - pos);
    up_in_len -= pos;
    if (up_in_len == sizeof up_in) fatal("upstream: line too long");
  }
}

static void up_closed(ssize_t n) {
  if (n == 0) fatal("upstream closed the link (no reconnect in this program)");
  fatal("upstream read: %s", strerror(errno));
}

/** Reads what the upstream has, at most UP_READ_CAP bytes this turn. */
static void up_read(void) {
  size_t budget = UP_READ_CAP;
  while (budget > 0 && !stop_requested) {
    size_t room;
    char *dst;
    if (up_state < UP_RDB) {
      dst = up_in + up_in_len;
      room = sizeof up_in - up_in_len;
    } else if (up_state == UP_RDB) {
      if (rdb_expect >= 0) {
        room = (size_t)rdb_expect - rdb_len;  // exactly the RDB: the stream goes to its own buffer
      } else {
        rdb_ensure(1 << 20);
        room = rdb_cap - rdb_len;
      }
      dst = rdb + rdb_len;
    } else {
      if (!sbuf_room(1 << 20)) fatal("stream buffer full (%zu bytes reserved; CREF_RESERVE_GB)", sbuf_reserved);
      dst = sbuf + sbuf_len;
      room = sbuf_committed - sbuf_len;
    }
    if (room > budget) room = budget;
    ssize_t n = read(up_fd, dst, room);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) up_closed(n);
    budget -= (size_t)n;
    if (up_state < UP_RDB) {
      up_in_len += (size_t)n;
      up_parse_handshake();
    } else if (up_state == UP_RDB) {
      rdb_got((size_t)n);
    } else {
      sbuf_len += (size_t)n;
      if ((size_t)n < room) return;  // drained (level-triggered: more wakes the next turn)
    }
  }
}

static void up_connect(void) {
  struct addrinfo hints = {0}, *res;
  char port[16];
  snprintf(port, sizeof port, "%d", up_port);
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(up_host, port, &hints, &res);
  if (rc != 0) fatal("upstream %s:%d: %s", up_host, up_port, gai_strerror(rc));
  up_fd = socket(res->ai_family, SOCK_STREAM, 0);
  if (up_fd < 0) fatal("socket: %s", strerror(errno));
  if (connect(up_fd, res->ai_addr, res->ai_addrlen) != 0) fatal("connect to %s:%d: %s", up_host, up_port, strerror(errno));
  freeaddrinfo(res);
  set_nonblock(up_fd);
  set_nodelay(up_fd);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_up};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, up_fd, &ev) != 0) fatal("epoll_ctl: %s", strerror(errno));
  up_command("PING", NULL);
}

// ---------------------------------------------------------------- clients
static void out_append(struct client *c, const char *p, size_t n) {
  if (c->out_pos == c->out_len) c->out_pos = c->out_len = 0;
  if (c->out_cap - c->out_len < n) {
    size_t cap = c->out_cap ? c->out_cap : 256;
    while (cap - c->out_len < n) cap *= 2;
    c->out = xrealloc(c->out, cap);
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, p, n);
  c->out_len += n;
}

static void out_str(struct client *c, const char *s) {
  out_append(c, s, strlen(s));
}

static size_t used_memory(void) {
  size_t m = sbuf_len + rdb_cap + clients_cap * sizeof(struct client *);
  for (size_t i = 0; i < nclients; i++) m += sizeof(struct client) + clients[i]->in_cap + clients[i]->out_cap;
  return m;
}

static void reply_info(struct client *c) {
  char body[2048];
  int n = snprintf(body, sizeof body,
                   "# Server\r\nserver:psync-relay-bench-c-ref\r\nprocess_id:%d\r\ntcp_port:%d\r\n\r\n"
                   "# Replication\r\nrole:slave\r\nmaster_host:%s\r\nmaster_port:%d\r\nmaster_link_status:%s\r\n"
                   "master_sync_in_progress:%d\r\nslave_repl_offset:%lld\r\nmaster_replid:%s\r\nmaster_repl_offset:%lld\r\n"
                   "connected_slaves:%zu\r\n\r\n"
                   "# Memory\r\nused_memory:%zu\r\nstream_buffer_bytes:%zu\r\nrdb_bytes:%zu\r\n",
                   (int)getpid(), listen_port, up_host, up_port, link_up ? "up" : "down", up_state == UP_RDB ? 1 : 0,
                   stream_offset(), master_replid, stream_offset(), nreplicas, used_memory(), sbuf_len, rdb_len);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof body) n = (int)sizeof body - 1;  // a very long upstream host name: cut
  char hdr[32];
  int h = snprintf(hdr, sizeof hdr, "$%d\r\n", n);
  out_append(c, hdr, (size_t)h);
  out_append(c, body, (size_t)n);
  out_str(c, "\r\n");
}

static int arg_is(const char *a, size_t n, const char *word) {
  return strlen(word) == n && strncasecmp(a, word, n) == 0;
}

/** One command; returns 0 when the client became a replica (the rest of its input is discarded). */
static int execute(struct client *c, int argc, char **argv, size_t *lens) {
  if (argc == 0) return 1;
  const char *cmd = argv[0];
  size_t n = lens[0];
  if (arg_is(cmd, n, "PING")) {
    out_str(c, "+PONG\r\n");
  } else if (arg_is(cmd, n, "REPLCONF")) {
    if (!(argc >= 2 && arg_is(argv[1], lens[1], "ACK"))) out_str(c, "+OK\r\n");
  } else if (arg_is(cmd, n, "AUTH") || arg_is(cmd, n, "SELECT")) {
    out_str(c, "+OK\r\n");
  } else if (arg_is(cmd, n, "INFO")) {
    reply_info(c);
  } else if (arg_is(cmd, n, "PSYNC") || arg_is(cmd, n, "SYNC")) {
    if (!link_up) {
      out_str(c, "-NOMASTERLINK Can't SYNC while not connected with my master\r\n");
      return 1;
    }
    char hdr[128];
    int h = arg_is(cmd, n, "PSYNC") ? snprintf(hdr, sizeof hdr, "+FULLRESYNC %s %lld\r\n$%zu\r\n", master_replid, fullresync_offset, rdb_len)
                                    : snprintf(hdr, sizeof hdr, "$%zu\r\n", rdb_len);
    out_append(c, hdr, (size_t)h);
    c->replica = 1;
    c->rdb_pos = 0;
    c->cursor = 0;
    nreplicas++;
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
    return 0;
  } else {
    char msg[96];
    snprintf(msg, sizeof msg, "-ERR unknown command '%.*s'\r\n", (int)(n > 40 ? 40 : n), cmd);
    for (char *p = msg + 1; *p; p++)
      if (*p == '\r' || *p == '\n') *p = ' ';
    memcpy(msg + strlen(msg) - 2, "\r\n", 2);
    out_str(c, msg);
  }
  return 1;
}

/** Parses and runs the complete commands in c->in (multibulk, or inline); -1 on a protocol error. */
static int parse_commands(struct client *c) {
  size_t pos = 0;
  while (pos < c->in_len && !c->replica) {
    char *argv[MAX_ARGS];
    size_t lens[MAX_ARGS];
    int argc = 0;
    char *p = c->in + pos, *end = c->in + c->in_len;
    char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl) break;
    if (*p == '*') {
      char *q;
      long count = strtol(p + 1, &q, 10);
      if (*q != '\r' || count < 0 || count > 1024 * 1024) return -1;
      char *cur = nl + 1;
      long i;
      for (i = 0; i < count; i++) {
        if (cur >= end) break;
        char *l = memchr(cur, '\n', (size_t)(end - cur));
        if (!l) break;
        if (*cur != '$') return -1;
        long blen = strtol(cur + 1, &q, 10);
        if (*q != '\r' || blen < 0 || blen > (long)MAX_INPUT) return -1;
        char *data = l + 1;
        if (end - data < blen + 2) break;
        if (argc < MAX_ARGS) {
          argv[argc] = data;
          lens[argc] = (size_t)blen;
          argc++;
        }
        cur = data + blen + 2;
      }
      if (i < count) break;  // incomplete
      pos = (size_t)(cur - c->in);
    } else {
      // Inline: words separated by spaces.
      char *e = nl;
      if (e > p && e[-1] == '\r') e--;
      char *w = p;
      while (w < e) {
        while (w < e && (*w == ' ' || *w == '\t')) w++;
        if (w == e) break;
        char *s = w;
        while (w < e && *w != ' ' && *w != '\t') w++;
        if (argc < MAX_ARGS) {
          argv[argc] = s;
          lens[argc] = (size_t)(w - s);
          argc++;
        }
      }
      pos = (size_t)(nl + 1 - c->in);
    }
    if (!execute(c, argc, argv, lens)) return 0;  // a replica now: c->in is gone
  }
  memmove(c->in, c->in + pos, c->in_len - pos);
  c->in_len -= pos;
  return 0;
}

static void client_read(struct client *c) {
  static char scratch[65536];
  for (;;) {
    char *dst;
    size_t room;
    if (c->replica) {
      dst = scratch;  // REPLCONF ACKs: read and discarded
      room = sizeof scratch;
    } else {
      if (c->in_cap - c->in_len < 4096) {
        size_t cap = c->in_cap ? c->in_cap * 2 : 4096;
        if (cap > MAX_INPUT) {
          c->dead = 1;
          return;
        }
        c->in = xrealloc(c->in, cap);
        c->in_cap = cap;
      }
      dst = c->in + c->in_len;
      room = c->in_cap - c->in_len;
    }
    ssize_t n = read(c->fd, dst, room);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      c->dead = 1;
      return;
    }
    if (!c->replica) {
      c->in_len += (size_t)n;
      if (parse_commands(c) < 0) {
        out_str(c, "-ERR Protocol error\r\n");
        c->dead = 1;
        return;
      }
    }
  }
}

static int client_pending(const struct client *c) {
  return c->out_pos < c->out_len || (c->replica && (c->rdb_pos < rdb_len || c->cursor < sbuf_len));
}

/** At most one write() of at most WRITE_CAP bytes: replies first, then the RDB, then the stream. */
static void client_write(struct client *c) {
  if (c->dead || c->blocked) return;
  const char *p;
  size_t n;
  size_t *advance;
  if (c->out_pos < c->out_len) {
    p = c->out + c->out_pos;
    n = c->out_len - c->out_pos;
    advance = &c->out_pos;
  } else if (!c->replica) {
    return;
  } else if (c->rdb_pos < rdb_len) {
    p = rdb + c->rdb_pos;
    n = rdb_len - c->rdb_pos;
    advance = &c->rdb_pos;
  } else if (c->cursor < sbuf_len) {
    p = sbuf + c->cursor;
    n = sbuf_len - c->cursor;
    advance = &c->cursor;
  } else {
    return;
  }
  if (n > WRITE_CAP) n = WRITE_CAP;
  ssize_t w = write(c->fd, p, n);
  if (w < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) c->blocked = 1;
    else if (errno != EINTR) c->dead = 1;
    return;
  }
  *advance += (size_t)w;
  if ((size_t)w < n) c->blocked = 1;  // the socket is full: EPOLLOUT (edge) says when it has room
}

static void client_add(int fd) {
  struct client *c = calloc(1, sizeof *c);
  if (!c) fatal("out of memory");
  c->fd = fd;
  if (nclients == clients_cap) {
    clients_cap = clients_cap ? clients_cap * 2 : 64;
    clients = xrealloc(clients, clients_cap * sizeof *clients);
  }
  c->idx = nclients;
  clients[nclients++] = c;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) fatal("epoll_ctl: %s", strerror(errno));
}

static void client_free(struct client *c) {
  close(c->fd);  // also leaves the epoll set
  if (c->replica) nreplicas--;
  struct client *last = clients[--nclients];
  clients[c->idx] = last;
  last->idx = c->idx;
  free(c->in);
  free(c->out);
  free(c);
}

static void accept_all(int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) note("accept: %s", strerror(errno));
      return;
    }
    set_nodelay(fd);
    client_add(fd);
  }
}

static int listen_on(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fatal("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) fatal("bind 127.0.0.1:%d: %s", port, strerror(errno));
  if (listen(fd, 4096) != 0) fatal("listen: %s", strerror(errno));
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s <listen-port> <upstream-host> <upstream-port>\n", argv[0]);
    return 2;
  }
  listen_port = atoi(argv[1]);
  up_host = argv[2];
  up_port = atoi(argv[3]);
  if (listen_port <= 0 || listen_port > 65535 || up_port <= 0 || up_port > 65535) {
    fprintf(stderr, "bad port\n");
    return 2;
  }
  setvbuf(stderr, NULL, _IOLBF, 0);
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;  // no SA_RESTART: epoll_wait returns EINTR
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  sbuf_reserve();
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) fatal("epoll_create1: %s", strerror(errno));
  int lfd = listen_on(listen_port);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &tag_listen};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) != 0) fatal("epoll_ctl: %s", strerror(errno));
  note("listening on 127.0.0.1:%d, upstream %s:%d, %zu GiB reserved for the stream", listen_port, up_host, up_port, sbuf_reserved >> 30);
  up_connect();

  enum { MAX_EVENTS = 1024 };
  static struct epoll_event evs[MAX_EVENTS];
  int busy = 0;  // some client can write now: don't sleep in epoll_wait
  last_ack_ms = now_ms();
  while (!stop_requested) {
    int timeout = 0;
    if (!busy) {
      long long wait = link_up ? last_ack_ms + 1000 - now_ms() : 100;
      timeout = wait < 0 ? 0 : wait > 100 ? 100 : (int)wait;
    }
    int nev = epoll_wait(epfd, evs, MAX_EVENTS, timeout);
    if (nev < 0) {
      if (errno == EINTR) continue;
      fatal("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < nev; i++) {
      void *tag = evs[i].data.ptr;
      uint32_t e = evs[i].events;
      if (tag == &tag_listen) {
        accept_all(lfd);
      } else if (tag == &tag_up) {
        up_read();
      } else {
        struct client *c = tag;
        if (c->dead) continue;
        if (e & EPOLLOUT) c->blocked = 0;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) client_read(c);
      }
    }
    if (up_out_len) up_flush();
    if (link_up && now_ms() - last_ack_ms >= 1000) up_ack();
    // The fan-out pass: at most WRITE_CAP bytes per socket.
    busy = 0;
    for (size_t i = 0; i < nclients; i++) {
      struct client *c = clients[i];
      client_write(c);
      if (!c->dead && !c->blocked && client_pending(c)) busy = 1;
    }
    for (size_t i = nclients; i-- > 0;)
      if (clients[i]->dead) client_free(clients[i]);
  }
  note("exiting on signal");
  return 0;
}
