# syntax=docker/dockerfile:1
# tcp-echo as one self-contained binary on a distroless base.
#
#   docker build -t tcp-echo:0.1.0 .
#   docker run --rm -p 3333:3333 -e NODE_NAME=EchoNode tcp-echo:0.1.0
#
# The same Deno version as CI (.ci/run); the manifest tests check they agree.
ARG DENO_VERSION=2.9.6

FROM denoland/deno:${DENO_VERSION} AS build
WORKDIR /src
COPY deno.json ./
# The program: main.ts and the folders it loads (the .dockerignore keeps tests out), and
# build/: the compile step and server.lock, the packages of the server and the client only.
COPY main.ts ./
COPY src/ src/
COPY client/ client/
COPY build/ build/
RUN deno install --lock=build/server.lock --frozen --entrypoint main.ts client/client.ts
# The compile flags and permissions are the start task's (deno.json), read by build/compile.ts.
RUN deno task compile

# The compiled binary links glibc and libgcc, so `static` and alpine bases cannot run it.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tcp-echo" \
      org.opencontainers.image.description="TCP echo server that says which node, pod, namespace and version answered; for learning and debugging Kubernetes and Istio TCP networking" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
# Size the V8 heap from the container's memory limit, not the node's memory.
ENV DENO_USE_CGROUPS=1
COPY --from=build /src/tcp-echo /tcp-echo
# distroless's nonroot user: never root, never 1337 (Istio's sidecar uid).
USER 65532:65532
EXPOSE 3333 3333/udp 8080
ENTRYPOINT ["/tcp-echo"]
