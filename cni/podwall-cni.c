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
 * The agent's answer is checked before it is printed: an HTTP status line, a body of the length
 * the headers announce, and a JSON object that is a CNI result (200, with "cniVersion") or a CNI
 * error ("code" and "msg"). Anything else (garbage, truncated JSON, a closed connection) becomes
 * this plugin's own error 11, so the runtime never reads invalid JSON or a success it cannot parse.
 *
 * Socket: $PODWALL_CNI_SOCKET, else /run/podwall/cni.sock. Build: sh cni/build.sh OUTPUT (the one
 * recipe: static PIE, stack protector, _FORTIFY_SOURCE).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

/*
 * A strict JSON (RFC 8259) checker over buf[0..len): no allocation, bounded depth. For the top-level
 * object it notes which of the members a CNI result or error needs are present with the right type.
 */
struct json {
  const char *p, *end;
  int depth;
  int has_version, has_code, has_msg; /* "cniVersion": string, "code": integer, "msg": string */
};

static void ws(struct json *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int lit(struct json *j, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return 0;
  j->p += n;
  return 1;
}

static int hex(char c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
static int digit(const struct json *j) { return j->p < j->end && *j->p >= '0' && *j->p <= '9'; }

/* A string; raw and rawlen get its contents as written (for comparing plain ASCII member names). */
static int str(struct json *j, const char **raw, size_t *rawlen) {
  if (j->p >= j->end || *j->p != '"') return 0;
  const char *start = ++j->p;
  while (j->p < j->end) {
    unsigned char c = (unsigned char)*j->p;
    if (c == '"') {
      if (raw) *raw = start, *rawlen = (size_t)(j->p - start);
      j->p++;
      return 1;
    }
    if (c < 0x20) return 0;
    if (c == '\\') {
      if (++j->p >= j->end) return 0;
      c = (unsigned char)*j->p;
      if (c == 'u') {
        if (j->end - j->p < 5 || !hex(j->p[1]) || !hex(j->p[2]) || !hex(j->p[3]) || !hex(j->p[4])) return 0;
        j->p += 4;
      } else if (!strchr("\"\\/bfnrt", c)) {
        return 0;
      }
    }
    j->p++;
  }
  return 0;
}

/* A number; *integer says whether it had no fraction or exponent. */
static int num(struct json *j, int *integer) {
  *integer = 1;
  if (j->p < j->end && *j->p == '-') j->p++;
  if (!digit(j)) return 0;
  if (*j->p == '0') j->p++;
  else while (digit(j)) j->p++;
  if (j->p < j->end && *j->p == '.') {
    j->p++;
    *integer = 0;
    if (!digit(j)) return 0;
    while (digit(j)) j->p++;
  }
  if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
    j->p++;
    *integer = 0;
    if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
    if (!digit(j)) return 0;
    while (digit(j)) j->p++;
  }
  return 1;
}

/* One value; kind reports what it was: 's'tring, 'i'nteger, 'n'umber, 'o'bject, or 0 for the rest. */
static int value(struct json *j, int *kind) {
  int integer;
  *kind = 0;
  ws(j);
  if (j->p >= j->end) return 0;
  switch (*j->p) {
  case '"':
    *kind = 's';
    return str(j, NULL, NULL);
  case 't':
    return lit(j, "true");
  case 'f':
    return lit(j, "false");
  case 'n':
    return lit(j, "null");
  case '[':
  case '{': {
    int object = *j->p == '{', top = j->depth == 0;
    char close = object ? '}' : ']';
    if (++j->depth > 64) return 0;
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == close) {
      j->p++;
      j->depth--;
      *kind = object ? 'o' : 0;
      return 1;
    }
    for (;;) {
      const char *name = NULL;
      size_t namelen = 0;
      int k;
      if (object) {
        ws(j);
        if (!str(j, &name, &namelen)) return 0;
        ws(j);
        if (j->p >= j->end || *j->p != ':') return 0;
        j->p++;
      }
      if (!value(j, &k)) return 0;
      if (object && top) {
        if (namelen == 10 && memcmp(name, "cniVersion", 10) == 0) j->has_version = k == 's';
        if (namelen == 4 && memcmp(name, "code", 4) == 0) j->has_code = k == 'i';
        if (namelen == 3 && memcmp(name, "msg", 3) == 0) j->has_msg = k == 's';
      }
      ws(j);
      if (j->p < j->end && *j->p == ',') {
        j->p++;
        continue;
      }
      if (j->p < j->end && *j->p == close) {
        j->p++;
        j->depth--;
        *kind = object ? 'o' : 0;
        return 1;
      }
      return 0;
    }
  }
  default:
    if (!num(j, &integer)) return 0;
    *kind = integer ? 'i' : 'n';
    return 1;
  }
}

/* The body is one JSON object and nothing else; fills the member flags. */
static int json_object(struct json *j, const char *buf, size_t len) {
  int kind;
  memset(j, 0, sizeof *j);
  j->p = buf;
  j->end = buf + len;
  if (!value(j, &kind) || kind != 'o') return 0;
  ws(j);
  return j->p == j->end;
}

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v ? v : "";
}

/* Header values come from the runtime's environment; a line break would forge headers. */
static int clean(const char *v) { return strpbrk(v, "\r\n") == NULL; }

/* To the agent's socket. MSG_NOSIGNAL: an agent that hangs up must not kill us with SIGPIPE before
 * we print an error. */
static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Case-insensitive: does the header block [h, end) hold "Content-Length: N"? Sets *n. */
static int content_length(const char *h, const char *end, size_t *n) {
  static const char name[] = "\r\ncontent-length:";
  for (const char *p = h; p + sizeof name - 1 <= end; p++) {
    if (strncasecmp(p, name, sizeof name - 1) != 0) continue;
    p += sizeof name - 1;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p >= end || *p < '0' || *p > '9') return -1;
    size_t v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
      if (v > MAX_REPLY) return -1;
      v = v * 10 + (size_t)(*p - '0');
    }
    *n = v;
    return 1;
  }
  return 0;
}

/* Check the agent's whole reply and print it, or this plugin's own error in its place. */
static int answer(const char *reply, size_t got) {
  int status = 0, used = 0;
  if (got == 0) return fail(11, "the podwall agent closed the connection without an answer", NULL);
  if (sscanf(reply, "HTTP/1.%*1[01] %3d%n", &status, &used) != 1 || used == 0)
    return fail(11, "malformed answer from the podwall agent", "no HTTP status line");
  const char *head_end = NULL;
  for (size_t i = 0; i + 4 <= got; i++)
    if (memcmp(reply + i, "\r\n\r\n", 4) == 0) {
      head_end = reply + i;
      break;
    }
  if (!head_end) return fail(11, "malformed answer from the podwall agent", "headers not terminated");
  const char *body = head_end + 4;
  size_t len = got - (size_t)(body - reply), want = 0;
  int cl = content_length(reply, head_end, &want);
  if (cl < 0) return fail(11, "malformed answer from the podwall agent", "bad Content-Length");
  if (cl > 0 && want != len) return fail(11, "malformed answer from the podwall agent", "truncated body");
  struct json j;
  if (!json_object(&j, body, len)) return fail(11, "malformed answer from the podwall agent", "body is not a JSON object");
  if (status == 200 && !j.has_version)
    return fail(11, "malformed answer from the podwall agent", "result without cniVersion");
  if (status != 200 && !(j.has_code && j.has_msg)) {
    char detail[64];
    snprintf(detail, sizeof detail, "HTTP %d without a CNI error object", status);
    return fail(11, "malformed answer from the podwall agent", detail);
  }
  fwrite(body, 1, len, stdout);
  if (body[len - 1] != '\n') putchar('\n');
  return status == 200 ? 0 : 1;
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
  if ((write_all(fd, head, (size_t)off) < 0 || write_all(fd, config, len) < 0) && errno != EPIPE &&
      errno != ECONNRESET)
    return fail(11, "writing to the podwall agent failed", strerror(errno));
  /* An agent that hung up may still have answered (an early refusal): read whatever it sent. */

  static char reply[MAX_REPLY + 1];
  size_t got = 0;
  for (;;) {
    if (got == MAX_REPLY) return fail(11, "the podwall agent's answer is larger than 1 MiB", NULL);
    ssize_t n = read(fd, reply + got, MAX_REPLY - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(11, "no answer from the podwall agent", strerror(errno));
    if (n == 0) break;
    got += (size_t)n;
  }
  close(fd);
  reply[got] = 0;
  return answer(reply, got);
}
