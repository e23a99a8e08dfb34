#!/usr/bin/env bash
# Build docker/Dockerfile and check the image serves: start it, run
# SELECT 1 over the wire, read /readyz. Where no docker daemon answers, say
# so and stop (exit 0): the image was not checked there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
  echo "docker-check: no docker daemon here; the image was NOT built or checked" >&2
  exit 0
fi
tag=quiver:check
docker build -f docker/Dockerfile -t "$tag" .
name=quiver-check-$$
docker run -d --rm --name "$name" -e QUIVER_PASSWORD=check-secret -p 127.0.0.1::5433 -p 127.0.0.1::9187 "$tag" >/dev/null
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
pg_port=$(docker port "$name" 5433/tcp | head -1 | sed 's/.*://')
http_port=$(docker port "$name" 9187/tcp | head -1 | sed 's/.*://')
for _ in $(seq 1 60); do
  if PGPASSWORD=check-secret psql -h 127.0.0.1 -p "$pg_port" -U quiver -d default -Atc 'SELECT 1' 2>/dev/null | grep -qx 1; then
    ready=$(exec 3<>"/dev/tcp/127.0.0.1/$http_port"; printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3; head -1 <&3)
    echo "docker-check: the image serves SQL; /readyz: $ready"
    exit 0
  fi
  sleep 1
done
echo "docker-check: the container did not answer SELECT 1 within 60 s" >&2
docker logs "$name" >&2 || true
exit 1
