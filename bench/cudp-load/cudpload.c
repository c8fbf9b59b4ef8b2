/* cudpload: a single-threaded epoll UDP load client, a stand-in for
 * `go-load PORT udp FLOWS SIZE SECONDS` (bench/go-load/main.go): the same
 * semantics and the same JSON line, at less CPU per datagram, so that the
 * bench's UDP figures are the servers'. Loopback (127.0.0.1) only.
 *
 *   cudpload PORT udp FLOWS SIZE SECONDS
 *
 * FLOWS sockets (a flow each: its own source port, connected to the server)
 * each send a SIZE-byte datagram (its sequence number in the first 8 bytes,
 * little-endian, then go-load's pattern: byte i = i*7 + i>>8) and wait for
 * that same datagram back, byte for byte; then the next. A datagram that is
 * not the one awaited (the banner a new flow gets, a late echo) is skipped;
 * none back within 250 ms counts as lost and the flow sends its next.
 * connections_per_sec = datagrams echoed / elapsed. A send or receive error
 * other than a full buffer, or an ICMP refusal, counts one failure and stops
 * that flow.
 *
 * client_cpu = getrusage(RUSAGE_SELF) user+sys over the run / wall time
 * (1.0 = a whole core), as go-load reports it. Output, one line on stdout:
 *   {"mode":"udp","conns":8,"seconds":5.002,"connections_per_sec":1234.5,
 *    "mb_per_sec":0.0,"client_cpu":0.42,"failures":0,"lost":0}
 *
 * Build: gcc -O2 -o cudpload cudpload.c
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FLOWS 1024
#define MAX_SIZE 65507
#define LOST_AFTER_NS 250000000LL

struct flow {
  int fd;
  int done; /* stopped by a failure */
  uint64_t seq;
  int64_t sent_at;
  unsigned char *sent;
};

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static void usage(void) {
  fprintf(stderr, "usage: cudpload PORT udp FLOWS SIZE SECONDS\n");
  exit(2);
}

static long number(const char *text, long min, long max) {
  char *end;
  long value = strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || value < min || value > max) usage();
  return value;
}

static long long failures, lost, echoed;
static int reported;

static void fail(struct flow *f, const char *what) {
  failures++;
  f->done = 1;
  if (reported++ < 10) fprintf(stderr, "cudpload: %s: %s\n", what, strerror(errno));
}

/* Sends the flow's next datagram (the next sequence number). */
static void send_next(struct flow *f, size_t size) {
  f->seq++;
  for (size_t i = 0; i < 8 && i < size; i++) f->sent[i] = (unsigned char)(f->seq >> (8 * i));
  for (;;) {
    if (send(f->fd, f->sent, size, 0) == (ssize_t)size) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == ENOBUFS) break; /* as if lost: the timeout sends again */
    fail(f, "send");
    return;
  }
  f->sent_at = now_ns();
}

int main(int argc, char **argv) {
  if (argc != 6 || strcmp(argv[2], "udp") != 0) usage();
  int port = (int)number(argv[1], 1, 65535);
  int flows = (int)number(argv[3], 1, MAX_FLOWS);
  size_t size = (size_t)number(argv[4], 0, MAX_SIZE);
  long seconds = number(argv[5], 1, 3600);

  struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &server.sin_addr);
  int ep = epoll_create1(0);
  static struct flow all[MAX_FLOWS];
  static unsigned char got[MAX_SIZE + 1];
  for (int i = 0; i < flows; i++) {
    struct flow *f = &all[i];
    f->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (f->fd < 0 || connect(f->fd, (struct sockaddr *)&server, sizeof server) != 0) {
      perror("cudpload: socket");
      return 1;
    }
    f->sent = malloc(size > 0 ? size : 1);
    for (size_t b = 0; b < size; b++) f->sent[b] = (unsigned char)(b * 7 + (b >> 8));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = f};
    epoll_ctl(ep, EPOLL_CTL_ADD, f->fd, &ev);
  }

  double cpu0 = cpu_seconds();
  int64_t start = now_ns(), deadline = start + seconds * 1000000000LL;
  for (int i = 0; i < flows; i++) send_next(&all[i], size);
  struct epoll_event events[MAX_FLOWS];
  int64_t now = start;
  while (now < deadline) {
    int n = epoll_wait(ep, events, flows, 10);
    now = now_ns();
    for (int e = 0; e < n; e++) {
      struct flow *f = events[e].data.ptr;
      while (!f->done) {
        ssize_t r = recv(f->fd, got, sizeof got, 0);
        if (r < 0) {
          if (errno == EINTR) continue;
          if (errno != EAGAIN) fail(f, "recv");
          break;
        }
        if ((size_t)r != size || memcmp(got, f->sent, size) != 0) continue; /* banner, late echo */
        echoed++;
        if (now < deadline) send_next(f, size);
      }
    }
    for (int i = 0; i < flows; i++) {
      struct flow *f = &all[i];
      if (!f->done && now - f->sent_at > LOST_AFTER_NS && now < deadline) {
        lost++;
        send_next(f, size);
      }
    }
  }
  double elapsed = (now_ns() - start) / 1e9;
  double cpu = (cpu_seconds() - cpu0) / elapsed;
  printf("{\"mode\":\"udp\",\"conns\":%d,\"seconds\":%.3f,\"connections_per_sec\":%.1f,"
         "\"mb_per_sec\":0.0,\"client_cpu\":%.2f,\"failures\":%lld,\"lost\":%lld}\n",
         flows, elapsed, echoed / elapsed, cpu, failures, lost);
  return failures > 0 ? 1 : 0;
}
