# podwall node agent image. Build: docker build -t podwall:dev .
#
# Base: Node.js 24 LTS (Node 20 left support on 2026-04-30). Pinned by digest, so a rebuild gets
# the same base: this is node:24-bookworm-slim (24.18.0) as published, the digest copied from
# public Dockerfiles that pin it (it could not be checked against the registry from the machine
# this was written on). Move it deliberately: docker buildx imagetools inspect node:24-bookworm-slim
# prints the current digest; pass it with --build-arg NODE_IMAGE=node:24-bookworm-slim@sha256:...
# koffi (Node-API 8) and @kubernetes/client-node 1.4 (tested upstream on Node 18-24) support it.
ARG NODE_IMAGE=node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-fund --no-audit
COPY tsconfig.json ./
COPY src ./src
RUN npm run build
# The chained CNI plugin runs on the node itself, outside this image: cni/build.sh is its one
# recipe (static PIE, stack protector, _FORTIFY_SOURCE), shared with the tests.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY cni ./cni
RUN sh cni/build.sh cni/podwall-cni

FROM ${NODE_IMAGE}
# Kernel tools podwall drives (it picks the nft or legacy backend the host already uses).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iptables ipset conntrack iproute2 libnetfilter-queue1 libnetfilter-conntrack3 libnetfilter-log1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-fund --no-audit && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY --from=build /src/cni/podwall-cni ./cni/podwall-cni
COPY examples ./examples
COPY src/dataplane/lab/podagent.py ./src/dataplane/lab/podagent.py
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["agent"]
