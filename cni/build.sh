#!/bin/sh
# The one build recipe of podwall-cni, used by the Dockerfile and the tests: sh cni/build.sh OUTPUT
# The plugin runs on the node, outside the image, as root, reading what the runtime and the agent
# send it: a static PIE (no loader or libc of the node's needed; ASLR applies), with stack
# protector, _FORTIFY_SOURCE=2 (needs -O2), full RELRO and a non-executable stack.
set -eu
out=${1:?usage: sh cni/build.sh OUTPUT}
exec "${CC:-cc}" -O2 -Wall -Wextra -Werror \
  -fPIE -static-pie -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
  -Wl,-z,relro,-z,now -Wl,-z,noexecstack \
  -o "$out" "$(dirname "$0")/podwall-cni.c"
