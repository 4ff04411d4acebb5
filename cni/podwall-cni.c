/*
 * podwall-cni: a chained CNI plugin that holds a pod's ADD until the podwall agent on this node has
 * programmed the pod's policy, so no container of an isolated pod runs before its rules exist.
 *
 * Owns: the CNI calling convention (CNI_* environment, config on stdin, result on stdout, exit code)
 * and one request to the agent over its unix socket. All policy and JSON work happens in the agent:
 * the stdin config goes as the HTTP body, the CNI_* variables as headers, and the agent's answer
 * (the previous plugin's result, or a CNI error object) is printed as is.
 * May not: change the network, or succeed an ADD the agent did not confirm (fail closed: kubelet
 * retries the sandbox). DEL, CHECK, GC and STATUS succeed without the agent: nothing to undo here.
 *
 * Socket: $PODWALL_CNI_SOCKET, else /run/podwall/cni.sock. Build: cc -O2 -o podwall-cni podwall-cni.c
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/podwall/cni.sock"
#define MAX_CONFIG (1 << 20)
#define MAX_REPLY (1 << 20)
/* The agent answers within its own wait bound; this only guards against a hung agent. */
#define REPLY_TIMEOUT_S 60

static const char *SUPPORTED = "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]";

/* A CNI error result on stdout and exit 1: the runtime shows msg to the operator. */
static int fail(int code, const char *msg, const char *detail) {
  printf("{\"cniVersion\":\"1.0.0\",\"code\":%d,\"msg\":\"podwall: %s\",\"details\":\"", code, msg);
  for (const char *p = detail ? detail : ""; *p; p++) {
    if (*p == '"' || *p == '\\') putchar('\\');
    if ((unsigned char)*p >= 0x20) putchar(*p);
  }
  printf("\"}\n");
  return 1;
}

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v ? v : "";
}

/* Header values come from the runtime's environment; a line break would forge headers. */
static int clean(const char *v) { return strpbrk(v, "\r\n") == NULL; }

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

int main(void) {
  const char *cmd = env("CNI_COMMAND");
  if (strcmp(cmd, "VERSION") == 0) {
    printf("{\"cniVersion\":\"1.0.0\",\"supportedVersions\":%s}\n", SUPPORTED);
    return 0;
  }
  if (strcmp(cmd, "ADD") != 0) return 0; /* DEL, CHECK, GC, STATUS: nothing of ours to do */

  static char config[MAX_CONFIG];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(0, config + len, sizeof config - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(4, "cannot read the network configuration", strerror(errno));
    if (n == 0) break;
    len += (size_t)n;
    if (len == sizeof config) return fail(4, "network configuration too large", NULL);
  }

  const char *names[] = {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"};
  const char *headers[] = {"X-Cni-Containerid", "X-Cni-Netns", "X-Cni-Ifname", "X-Cni-Args"};
  char head[8192];
  int off = snprintf(head, sizeof head,
                     "POST /v1/cni/add HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n",
                     len);
  for (int i = 0; i < 4; i++) {
    const char *v = env(names[i]);
    if (!clean(v)) return fail(4, "a CNI_ variable holds a line break", names[i]);
    off += snprintf(head + off, sizeof head - off, "%s: %s\r\n", headers[i], v);
    if (off >= (int)sizeof head) return fail(4, "CNI_ variables too long", NULL);
  }
  off += snprintf(head + off, sizeof head - off, "\r\n");
  if (off >= (int)sizeof head) return fail(4, "CNI_ variables too long", NULL);

  const char *path = getenv("PODWALL_CNI_SOCKET");
  if (!path || !*path) path = DEFAULT_SOCKET;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) return fail(11, "socket path too long", path);
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) return fail(11, "socket", strerror(errno));
  struct timeval tv = {REPLY_TIMEOUT_S, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    char detail[512];
    snprintf(detail, sizeof detail, "%s: %s", path, strerror(errno));
    return fail(11, "the podwall agent is not reachable on this node (is its DaemonSet pod running?)", detail);
  }
  if (write_all(fd, head, (size_t)off) < 0 || write_all(fd, config, len) < 0)
    return fail(11, "writing to the podwall agent failed", strerror(errno));

  static char reply[MAX_REPLY + 1];
  size_t got = 0;
  for (;;) {
    ssize_t n = read(fd, reply + got, MAX_REPLY - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(11, "no answer from the podwall agent", strerror(errno));
    if (n == 0 || got + (size_t)n == MAX_REPLY) {
      got += (size_t)(n > 0 ? n : 0);
      break;
    }
    got += (size_t)n;
  }
  close(fd);
  reply[got] = 0;
  int status = 0;
  if (sscanf(reply, "HTTP/%*s %d", &status) != 1) return fail(11, "malformed answer from the agent", NULL);
  char *body = strstr(reply, "\r\n\r\n");
  body = body ? body + 4 : reply + got;
  fputs(body, stdout);
  if (*body && body[strlen(body) - 1] != '\n') putchar('\n');
  return status == 200 ? 0 : 1;
}
