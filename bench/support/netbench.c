// podwall bench helper (bench/nfqueue.ts, bench/denylog.ts), compiled at bench time. Modes:
//   server PORT                 TCP accept()+close() loop
//   connlat IP PORT N [GAP_US]  N sequential connect()s, one latency (us) per line on stdout;
//                               GAP_US: pause between connects (spreads N over a time window)
//   flood SRC DST DBASE NPORTS PPS SECS
//                               raw IPv4/UDP, each packet a new (sport, dport) pair, paced to PPS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int server(char **argv) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  if (bind(s, (struct sockaddr *)&sa, sizeof sa) || listen(s, 4096)) { perror("bind/listen"); return 1; }
  printf("ready\n");
  fflush(stdout);
  for (;;) { int c = accept(s, NULL, NULL); if (c >= 0) close(c); }
}

static int connlat(int argc, char **argv) {
  int n = atoi(argv[4]);
  long gap_us = argc > 5 ? atol(argv[5]) : 0;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
  inet_pton(AF_INET, argv[2], &sa.sin_addr);
  double *lat = calloc(n, sizeof(double));
  int fail = 0;
  for (int i = 0; i < n; i++) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct linger lg = {1, 0}; // RST on close: no TIME_WAIT, the source port is free again at once
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    struct timeval tv = {2, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    long long a = now_ns();
    int r = connect(s, (struct sockaddr *)&sa, sizeof sa);
    long long b = now_ns();
    if (r == 0) lat[i] = (b - a) / 1000.0; else { lat[i] = -1; fail++; }
    close(s);
    if (gap_us > 0) { struct timespec ts = {gap_us / 1000000, (gap_us % 1000000) * 1000}; nanosleep(&ts, NULL); }
  }
  for (int i = 0; i < n; i++) printf("%.3f\n", lat[i]);
  fprintf(stderr, "{\"fail\":%d}\n", fail);
  return 0;
}

#define BATCH 32
static int flood(char **argv) {
  const char *src = argv[2], *dst = argv[3];
  int dbase = atoi(argv[4]), nports = atoi(argv[5]);
  double pps = atof(argv[6]), secs = atof(argv[7]);
  long total = (long)(pps * secs);
  int s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (s < 0) { perror("socket"); return 1; }
  int sndbuf = 8 << 20;
  setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf);
  static unsigned char pkts[BATCH][44];
  struct iovec iov[BATCH];
  struct mmsghdr msgs[BATCH];
  struct sockaddr_in sa = {.sin_family = AF_INET};
  inet_pton(AF_INET, dst, &sa.sin_addr);
  memset(msgs, 0, sizeof msgs);
  for (int k = 0; k < BATCH; k++) {
    struct iphdr *ip = (struct iphdr *)pkts[k];
    struct udphdr *udp = (struct udphdr *)(pkts[k] + 20);
    ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = IPPROTO_UDP; ip->tot_len = htons(44);
    inet_pton(AF_INET, src, &ip->saddr);
    ip->daddr = sa.sin_addr.s_addr;
    udp->len = htons(24); udp->check = 0;
    memcpy(pkts[k] + 28, "podwall-nfq-flow", 16);
    iov[k].iov_base = pkts[k]; iov[k].iov_len = 44;
    msgs[k].msg_hdr.msg_iov = &iov[k]; msgs[k].msg_hdr.msg_iovlen = 1;
    msgs[k].msg_hdr.msg_name = &sa; msgs[k].msg_hdr.msg_namelen = sizeof sa;
  }
  long long t0 = now_ns();
  long i = 0, errs = 0;
  while (i < total) {
    long long el = now_ns() - t0;
    long due = (long)(el * pps / 1e9) + 1;
    if (due > total) due = total;
    if (due <= i) {
      long long next = t0 + (long long)((i + 1) * 1e9 / pps);
      long long wait = next - now_ns();
      if (wait > 20000) { struct timespec ts = {0, wait - 10000}; nanosleep(&ts, NULL); }
      continue;
    }
    int n = due - i > BATCH ? BATCH : (int)(due - i);
    for (int k = 0; k < n; k++) {
      long j = i + k; // a new (sport, dport) pair for every packet of the run
      struct udphdr *udp = (struct udphdr *)(pkts[k] + 20);
      udp->source = htons(1024 + (j % 64000));
      udp->dest = htons(dbase + (j / 64000) % nports);
    }
    int r = sendmmsg(s, msgs, n, 0);
    if (r <= 0) { errs++; if (errs > 1000000) break; continue; }
    i += r;
  }
  double dt = (now_ns() - t0) / 1e9;
  printf("{\"sent\":%ld,\"errors\":%ld,\"secs\":%.4f}\n", i, errs, dt);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "server")) return server(argv);
  if ((argc == 5 || argc == 6) && !strcmp(argv[1], "connlat")) return connlat(argc, argv);
  if (argc == 8 && !strcmp(argv[1], "flood")) return flood(argv);
  fprintf(stderr, "usage: server PORT | connlat IP PORT N [GAP_US] | flood SRC DST DBASE NPORTS PPS SECS\n");
  return 2;
}
