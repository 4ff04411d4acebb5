# podwall node agent image. Build: docker build -t podwall:dev .
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-fund --no-audit
COPY tsconfig.json ./
COPY src ./src
RUN npm run build
# The chained CNI plugin runs on the node itself, outside this image: link it statically.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY cni ./cni
RUN gcc -O2 -Wall -static -o cni/podwall-cni cni/podwall-cni.c

FROM node:20-bookworm-slim
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
