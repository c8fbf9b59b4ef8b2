/* ctlsload: a single-threaded epoll TLS load client on OpenSSL, a stand-in
 * for `go-load ... tls` (bench/go-load/main.go): same modes, same semantics,
 * the same JSON line, so bench.ts can switch clients by changing only the
 * command. Loopback (127.0.0.1) only.
 *
 *   ctlsload PORT connect CONNS SECONDS [tls]
 *   ctlsload PORT stream CONNS CHUNK SECONDS [tls]
 *
 * The trailing "tls" is accepted and ignored (every connection is TLS), so
 * go-load's TLS argument lists work as they are.
 *
 * connect: CONNS workers each: TCP connect, a full TLS 1.3 handshake, write
 *   the sync line "\x01SYNC\n", read until its echo (whatever comes before
 *   it is a banner and is skipped), send close_notify and close; again and
 *   again until SECONDS have passed (a connection under way then is
 *   finished and counted, as go-load's). connections_per_sec = completed
 *   connections (handshake + sync echo) / elapsed.
 * stream: CONNS connections each send the sync line and skip to its echo,
 *   then write CHUNK-byte pieces of go-load's 1 MiB repeating pattern
 *   (byte i = i*7 + i>>8) for SECONDS while every echoed byte is compared,
 *   in order; then close_notify and shutdown(SHUT_WR) (Go's CloseWrite),
 *   and read until the server's end (close_notify or TCP EOF). All sent
 *   bytes must have come back. mb_per_sec = verified echoed bytes / elapsed
 *   / 1e6; elapsed includes the drain, as go-load's does.
 * A worker that fails (connect, handshake, I/O error, a wrong byte, more or
 * fewer bytes back than sent, a resumed session) counts one failure and
 * stops, as in go-load; the first 10 reasons go to stderr. Connections
 * still open 30 s after SECONDS count as failures.
 *
 * TLS: 1.3 only; no certificate chain verification (the bench makes its
 * own cert: go-load's InsecureSkipVerify; X509_verify_cert, which OpenSSL
 * runs even under SSL_VERIFY_NONE, is skipped too), but the server's
 * CertificateVerify signature is checked, as Go checks it; SNI
 * "localhost"; ALPN "echo"; no session resumption (SSL_OP_NO_TICKET,
 * session cache off, a new SSL per connection, and SSL_session_reused()
 * must be 0): every connect is a full ECDHE handshake. Cipher-suite order
 * is Go 1.19's on a CPU with AES-GCM hardware (AES_128_GCM, CHACHA20,
 * AES_256_GCM), so servers that follow the client's order (rustls, in
 * tcp-echo) pick what they pick for go-load: TLS_AES_128_GCM_SHA256. Key
 * share: OpenSSL's default, X25519, as Go's. A close without close_notify
 * (tcp-echo sends none) ends the data (SSL_OP_IGNORE_UNEXPECTED_EOF), as
 * Go's tls treats it; the byte count still has to match. Reads use
 * OpenSSL's read-ahead (64 KiB): one read() for what is there, not a
 * record header then its body.
 *
 * OpenSSL 3.0 (Debian 12's) decodes the server's certificate key through
 * OSSL_DECODER, which searched every provider's decoders on each
 * certificate: a third of the client's CPU per handshake here. An ENGINE
 * that claims EC keys with OpenSSL's own built-in EC method makes it take
 * the 1.1.1 path (see legacy_ec()). CTLSLOAD_NO_ENGINE=1 turns that off,
 * to compare.
 *
 * client_cpu = getrusage(RUSAGE_SELF) user+sys over the run / wall time
 * (1.0 = a whole core), as go-load reports it. On the first handshake one
 * line "ctlsload: TLSv1.3 <cipher> <group> alpn=<proto>" goes to stderr.
 *
 * Output, one line on stdout, go-load's format (and "lost", which
 * cudp-load counts for UDP, always 0 here):
 *   {"mode":"connect","conns":8,"seconds":5.002,"connections_per_sec":1234.5,
 *    "mb_per_sec":0.0,"client_cpu":0.42,"failures":0,"lost":0}
 * Exit code 0 after a run (failures are in the JSON), 2 on bad arguments,
 * 1 when OpenSSL cannot be set up.
 *
 * Measured once (2-core VM, Debian 12, OpenSSL 3.0.19, Go 1.19.8; servers
 * on core 0, clients on core 1; 3 alternating rounds of 5 s): against Go's
 * crypto/tls echo, 8 at a time, go-load made a median 2517 handshakes/s at
 * 0.96 of a core (381 us of client CPU each), ctlsload 2167/s at 0.97
 * (448 us), ctlsload with CTLSLOAD_NO_ENGINE=1 1539/s at 0.98 (608 us).
 * So on OpenSSL 3.0 this client is NOT cheaper per handshake than go-load
 * (about 15% dearer even with the ENGINE); the TLS 1.3 stream (4 x 64 KiB)
 * was server-bound for both (Go server 0.89-0.95 of core 0): 541 against
 * 600 MB/s, 1.2-1.8 against 1.5 ms of client CPU per MB.
 *
 * Build: gcc -O2 -Wall -Wextra -o ctlsload ctlsload.c -lssl -lcrypto
 * (OpenSSL 3; Debian: apt-get install -y libssl-dev). */
#define OPENSSL_SUPPRESS_DEPRECATED /* the ENGINE calls below: see legacy_ec() */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "ctlsload needs OpenSSL 3 (SSL_OP_IGNORE_UNEXPECTED_EOF, SSL_group_to_name)"
#endif

enum { HANDSHAKE, SENDSYNC, SYNCING, STREAM, CLOSING, DRAIN, DONE };
typedef struct {
  int fd, state, wpending; /* wpending: SSL_write must be retried with the same arguments */
  uint32_t events;
  SSL *ssl;
  char tail[6];
  uint64_t sent, got;
} conn_t;

static const char TOKEN[] = "\x01SYNC\n";
#define TOKLEN 6
#define PAT (1 << 20)
#define RBUF 65536
#define WBUDGET 4 /* pieces written per wake-up before others get a turn */
static int port, ep, streaming, active, printed;
static size_t chunk;
static unsigned char *pattern, *rbuf;
static long done, failures, reported;
static uint64_t verified;
static double end;
static SSL_CTX *ctx;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}

static void release(conn_t *c) {
  if (c->ssl) SSL_free(c->ssl);
  c->ssl = NULL;
  if (c->fd >= 0) close(c->fd); /* also leaves the epoll set */
  c->fd = -1;
}

/* The worker stops, as go-load's does on an error. sslerr: SSL_get_error's
 * answer, 0 for none, -1 for a system call's (errno). */
static void fail(conn_t *c, const char *what, int sslerr) {
  int err = errno;
  failures++;
  if (reported++ < 10) {
    if (sslerr == -1 || sslerr == SSL_ERROR_SYSCALL)
      fprintf(stderr, "ctlsload: %s (ssl error %d): %s\n", what, sslerr, strerror(err));
    else
      fprintf(stderr, "ctlsload: %s (ssl error %d)\n", what, sslerr);
    ERR_print_errors_fp(stderr);
  }
  ERR_clear_error();
  if (streaming) verified += c->got;
  release(c);
  c->state = DONE;
  active--;
}

static void set_interest(conn_t *c, uint32_t events) {
  if (c->events == events) return;
  struct epoll_event e = {.events = events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
  c->events = events;
}

static void drive(conn_t *c);

static void open_conn(conn_t *c) {
  int one = 1;
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  c->state = HANDSHAKE;
  active++;
  if (c->fd < 0) { fail(c, "socket", -1); return; }
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as Go's net does */
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (void *)&a, sizeof a) && errno != EINPROGRESS) { fail(c, "connect", -1); return; }
  c->ssl = SSL_new(ctx);
  if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) || !SSL_set_tlsext_host_name(c->ssl, "localhost")) {
    fail(c, "SSL_new", 0);
    return;
  }
  SSL_set_connect_state(c->ssl);
  c->events = EPOLLIN | EPOLLOUT;
  struct epoll_event e = {.events = c->events, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
  drive(c); /* sends the ClientHello, or waits for the connect */
}

/* connect mode: this connection is complete; close it, start the next. */
static void finish_connect(conn_t *c) {
  done++;
  SSL_shutdown(c->ssl); /* close_notify, as Go's tls.Conn.Close sends; no wait for the reply */
  release(c);
  c->state = DONE;
  active--;
  if (now() < end) open_conn(c);
}

static void print_params(SSL *s) {
  const unsigned char *alpn;
  unsigned alen;
  SSL_get0_alpn_selected(s, &alpn, &alen);
  const char *group = "?";
  const char *g = SSL_group_to_name(s, SSL_get_negotiated_group(s));
  if (g) group = g;
  fprintf(stderr, "ctlsload: %s %s %s alpn=%.*s\n", SSL_get_version(s),
          SSL_CIPHER_get_name(SSL_get_current_cipher(s)), group, (int)alen,
          alen ? (const char *)alpn : "none");
  printed = 1;
}

/* The length of the next piece to write: CHUNK, or less where the pattern ends. */
static size_t piece(const conn_t *c) {
  size_t off = c->sent % PAT;
  return PAT - off < chunk ? PAT - off : chunk;
}

/* Compares echoed bytes with what was sent at that offset; 0 on success. */
static int verify(conn_t *c, const unsigned char *p, size_t n) {
  /* A write still under way (wpending) may already have put records on the wire. */
  uint64_t out = c->sent + (c->wpending ? piece(c) : 0);
  if (c->got + n > out) { fail(c, "more bytes echoed than sent", 0); return -1; }
  while (n) {
    size_t off = c->got % PAT, run = PAT - off;
    if (run > n) run = n;
    if (memcmp(p, pattern + off, run)) {
      size_t i = 0;
      while (p[i] == pattern[off + i]) i++;
      char m[96];
      snprintf(m, sizeof m, "byte %llu differs", (unsigned long long)(c->got + i));
      fail(c, m, 0);
      return -1;
    }
    c->got += run;
    p += run;
    n -= run;
  }
  return 0;
}

/* Bytes read while skipping the banner; 1 when the connection was handed on. */
static int syncing(conn_t *c, const unsigned char *p, size_t n) {
  for (size_t j = 0; j < n; j++) {
    memmove(c->tail, c->tail + 1, TOKLEN - 1);
    c->tail[TOKLEN - 1] = p[j];
    if (memcmp(c->tail, TOKEN, TOKLEN)) continue;
    if (!streaming) { finish_connect(c); return 1; }
    c->state = STREAM; /* anything after the token must be the pattern: it is not, yet */
    return verify(c, p + j + 1, n - j - 1) ? 1 : 0;
  }
  return 0;
}

/* Runs the connection's state machine as far as it goes without blocking. */
static void drive(conn_t *c) {
  int out = 0, r, e;
  if (c->state == HANDSHAKE) {
    r = SSL_connect(c->ssl);
    if (r != 1) {
      e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ) set_interest(c, EPOLLIN);
      else if (e == SSL_ERROR_WANT_WRITE) set_interest(c, EPOLLOUT);
      else fail(c, "handshake", e);
      return;
    }
    if (SSL_session_reused(c->ssl)) { fail(c, "session resumed", 0); return; }
    if (!printed) print_params(c->ssl);
    c->state = SENDSYNC;
  }
  if (c->state == SENDSYNC) {
    r = SSL_write(c->ssl, TOKEN, TOKLEN);
    if (r <= 0) {
      e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_WRITE) set_interest(c, EPOLLIN | EPOLLOUT);
      else if (e == SSL_ERROR_WANT_READ) set_interest(c, EPOLLIN);
      else fail(c, "write sync", e);
      return;
    }
    c->state = SYNCING;
  }
  /* Read until OpenSSL has nothing buffered and the socket is empty: with
   * level-triggered epoll, data left inside OpenSSL would raise no event. */
  for (;;) {
    r = SSL_read(c->ssl, rbuf, RBUF);
    if (r > 0) {
      if (c->state == SYNCING ? syncing(c, rbuf, r) : verify(c, rbuf, r)) return;
      continue;
    }
    e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_WANT_WRITE) { out = 1; break; }
    if (e == SSL_ERROR_ZERO_RETURN && c->state == DRAIN) {
      if (c->got != c->sent) {
        char m[96];
        snprintf(m, sizeof m, "%llu of %llu bytes came back", (unsigned long long)c->got,
                 (unsigned long long)c->sent);
        fail(c, m, 0);
        return;
      }
      verified += c->got;
      release(c);
      c->state = DONE;
      active--;
      return;
    }
    fail(c, e == SSL_ERROR_ZERO_RETURN ? "server closed early" : "read", e);
    return;
  }
  if (c->state == STREAM) {
    int needs_read = 0; /* the pending write waits for the peer, not for room */
    for (int k = 0; k < WBUDGET; k++) {
      if (!c->wpending && now() >= end) { c->state = CLOSING; break; }
      r = SSL_write(c->ssl, pattern + c->sent % PAT, (int)piece(c));
      if (r > 0) {
        c->sent += r;
        c->wpending = 0;
        continue;
      }
      e = SSL_get_error(c->ssl, r);
      if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) { fail(c, "write", e); return; }
      c->wpending = 1;
      needs_read = e == SSL_ERROR_WANT_READ;
      break;
    }
    if (c->state == STREAM && !needs_read) out = 1; /* level-triggered: back when writable */
  }
  if (c->state == CLOSING) {
    r = SSL_shutdown(c->ssl); /* close_notify, then the TCP half-close: Go's CloseWrite */
    if (r >= 0) {
      shutdown(c->fd, SHUT_WR);
      c->state = DRAIN;
    } else {
      e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_WRITE) out = 1;
      else if (e != SSL_ERROR_WANT_READ) { fail(c, "close_notify", e); return; }
    }
  }
  set_interest(c, EPOLLIN | (out ? EPOLLOUT : 0));
}

/* No chain is checked (go-load's InsecureSkipVerify): skip X509_verify_cert,
 * which OpenSSL runs even under SSL_VERIFY_NONE. The CertificateVerify
 * signature is checked all the same. */
static int no_chain_check(X509_STORE_CTX *store, void *arg) {
  (void)store;
  (void)arg;
  return 1;
}

static int ec_nids[] = {EVP_PKEY_EC};
static int ec_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid) {
  (void)e;
  if (!pmeth) {
    *nids = ec_nids;
    return 1;
  }
  *pmeth = nid == EVP_PKEY_EC ? (EVP_PKEY_METHOD *)EVP_PKEY_meth_find(EVP_PKEY_EC) : NULL;
  return *pmeth != NULL;
}

/* OpenSSL 3.0 decodes a certificate's public key through OSSL_DECODER,
 * which builds a decoder context from every provider's decoders on each
 * certificate: a quarter of a handshake's CPU. It takes its old (1.1.1)
 * path when an ENGINE claims the key type. This ENGINE claims EC with
 * OpenSSL's own built-in EC method, so the server's P-256 key is decoded and
 * its signature checked by the same code, without the decoder search. */
static void legacy_ec(void) {
#ifndef OPENSSL_NO_ENGINE
  ENGINE *e = ENGINE_new();
  if (!e || !ENGINE_set_id(e, "ctlsload-ec") || !ENGINE_set_name(e, "built-in EC, legacy path") ||
      !ENGINE_set_pkey_meths(e, ec_pkey_meths) || !ENGINE_set_default_pkey_meths(e)) {
    fprintf(stderr, "ctlsload: the EC ENGINE could not be set up; decoding as usual\n");
    ERR_clear_error();
  }
  if (e) ENGINE_free(e); /* the table keeps its own reference */
#else
  (void)ec_pkey_meths;
#endif
}

static int usage(void) {
  fprintf(stderr, "usage: ctlsload PORT connect CONNS SECONDS [tls]\n"
                  "       ctlsload PORT stream CONNS CHUNK SECONDS [tls]\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 5) return usage();
  port = atoi(argv[1]);
  const char *mode = argv[2];
  streaming = !strcmp(mode, "stream");
  if (!streaming && strcmp(mode, "connect")) return usage();
  int n = atoi(argv[3]), rest = streaming ? 5 : 4;
  if (argc < rest + 1 || argc > rest + 2 || (argc == rest + 2 && strcmp(argv[rest + 1], "tls")))
    return usage();
  if (streaming) chunk = strtoul(argv[4], NULL, 10);
  double secs = atof(argv[rest]);
  if (port <= 0 || port > 65535 || n <= 0 || secs <= 0 || (streaming && (chunk == 0 || chunk > PAT)))
    return usage();
  signal(SIGPIPE, SIG_IGN);

  ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
                                     "TLS_AES_256_GCM_SHA384") ||
      SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x04" "echo", 5)) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_cert_verify_callback(ctx, no_chain_check, NULL);
  const char *no_engine = getenv("CTLSLOAD_NO_ENGINE");
  if (!no_engine || strcmp(no_engine, "1")) legacy_ec();
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* Read as much as is there in one read(), not a record header then its body. */
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, RBUF);

  pattern = malloc(PAT);
  rbuf = malloc(RBUF);
  for (int i = 0; i < PAT; i++) pattern[i] = (unsigned char)(i * 7 + (i >> 8));
  ep = epoll_create1(0);
  conn_t *cs = calloc(n, sizeof *cs);
  struct epoll_event evs[512];

  double cpu0 = cpu_seconds(), start = now();
  end = start + secs;
  for (int i = 0; i < n; i++) open_conn(&cs[i]);
  int swept = 0;
  while (active > 0) {
    double t = now();
    if (t > end + 30) break;
    if (streaming && !swept && t >= end) {
      /* Writers not woken since the deadline start their close now. */
      swept = 1;
      for (int i = 0; i < n; i++)
        if (cs[i].state == STREAM && !cs[i].wpending) drive(&cs[i]);
      continue;
    }
    int timeout = 100;
    if (t < end && (end - t) * 1000 < timeout) timeout = (int)((end - t) * 1000) + 1;
    int k = epoll_wait(ep, evs, 512, timeout);
    for (int i = 0; i < k; i++) {
      conn_t *c = evs[i].data.ptr;
      if (c->state != DONE) drive(c);
    }
  }
  for (int i = 0; i < n; i++)
    if (cs[i].state != DONE) fail(&cs[i], "no end 30 s after the deadline", 0);
  double el = now() - start;
  printf("{\"mode\":\"%s\",\"conns\":%d,\"seconds\":%.3f,\"connections_per_sec\":%.1f,"
         "\"mb_per_sec\":%.1f,\"client_cpu\":%.2f,\"failures\":%ld,\"lost\":0}\n",
         mode, n, el, done / el, verified / el / 1e6, (cpu_seconds() - cpu0) / el, failures);
  return 0;
}
