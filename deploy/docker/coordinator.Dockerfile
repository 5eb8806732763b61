# syntax=docker/dockerfile:1
# The coordinator: HTTP API, node hub, SQLite journal, and the node page it serves (dist/).
# Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t execution-node/coordinator:0.1.0 .
# Run (the tokens file is yours: docs/api.md "Authentication"; deploy/k8s/base/secrets/generate.sh writes one):
#   docker run -p 8080:8080 -v coordinator-data:/data \
#     -v "$PWD/deploy/k8s/base/secrets/auth.json:/etc/execution-node/auth.json:ro" execution-node/coordinator:0.1.0

# Build stage: every dependency (vite is a dev dependency) to build the page, then only the production ones.
FROM node:20-bookworm-slim AS build
WORKDIR /app
# onnxruntime-node (pulled in by transformers.js) is not used by the coordinator: skip its binary download.
ENV ONNXRUNTIME_NODE_INSTALL=skip
# better-sqlite3 builds from source where no prebuilt binary matches.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# Run stage: Node, the production node_modules (tsx runs the TypeScript sources), the sources the coordinator
# imports (server/, shared/, worker/) and the built page.
FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/package.json /app/package-lock.json /app/tsconfig.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/server ./server
COPY --from=build /app/shared ./shared
COPY --from=build /app/worker ./worker
# The journal (SQLite, WAL), webhook secret and adapters live in /data, owned by the unprivileged `node` user (uid 1000).
RUN mkdir -p /data && chown node:node /data
VOLUME /data
USER node
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# One process (tsx as a loader, not a wrapper), so SIGTERM reaches server/main.ts, which drains and closes the journal.
ENTRYPOINT ["node", "--import", "tsx", "server/main.ts"]
CMD ["--host", "0.0.0.0", "--port", "8080", "--db", "/data/coordinator.db", "--static", "dist", "--auth", "/etc/execution-node/auth.json"]
