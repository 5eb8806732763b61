# syntax=docker/dockerfile:1
# A headless node: Debian's Chromium, driven by scripts/nodes.ts (playwright-core), opens the node page the
# coordinator serves and joins its pool. WebGPU there is SwiftShader (CPU) unless the host passes a GPU through.
# Build from the repository root:
#   docker build -f deploy/docker/node.Dockerfile -t execution-node/node:0.1.0 .
# Run (the join token is a `node` token of the coordinator's auth.json):
#   docker run -e COORDINATOR_URL=http://coordinator:8080 -e NODE_TOKEN=… --shm-size=1g execution-node/node:0.1.0

FROM node:20-bookworm-slim AS deps
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=skip
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
# chromium: Debian's (bookworm-security keeps it current); tini reaps Chromium's child processes as PID 1.
RUN apt-get update \
  && apt-get install -y --no-install-recommends chromium fonts-liberation ca-certificates tini \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production CHROMIUM_PATH=/usr/bin/chromium
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY scripts ./scripts
USER node
# COORDINATOR_URL and NODE_TOKEN come from the environment; flags after the image name add to these
# (--count N pages in this one Chromium, --workers W agent workers per page).
ENTRYPOINT ["/usr/bin/tini", "--", "node", "--import", "tsx", "scripts/nodes.ts"]
CMD ["--count", "1"]
