#!/usr/bin/env bash
# A whole LiveMicro edge cloud on this machine, for demos and drills:
# three etcd members and three livemicrod nodes on 127.0.0.1, two virtual
# microscopes (scope-1 homed on node-a, scope-2 on node-b; node-c, at another
# site, has none of its own).  Prints each node's address and the admin token; Ctrl-C
# stops everything and removes the state (unless --keep-state DIR is given).
#
#   scripts/edge-cloud.sh [--build DIR] [--keep-state DIR]
#
# Then: livemicroctl --server http://127.0.0.1:8081 cluster status
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
state=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --keep-state) state="$2"; shift 2 ;;
    *) echo "edge-cloud: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v etcd > /dev/null || { echo "edge-cloud: etcd is missing (scripts/install-deps.sh)" >&2; exit 1; }
[ -x "$build/orchestrator/livemicrod" ] || { echo "edge-cloud: build first (meson compile -C $build)" >&2; exit 1; }
if [ -z "$state" ]; then
  state="$(mktemp -d -t livemicro-edge-XXXXXX)"
  cleanup_state=1
else
  mkdir -p "$state"
  cleanup_state=0
fi
export LIVEMICRO_ADMIN_TOKEN="${LIVEMICRO_ADMIN_TOKEN:-edge-cloud-demo-admin-token}"

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  [ "$cleanup_state" = 1 ] && rm -rf "$state"
}
trap stop_all EXIT INT TERM

# etcd: client ports 23790-23792, peer ports 23890-23892.
initial="e0=http://127.0.0.1:23890,e1=http://127.0.0.1:23891,e2=http://127.0.0.1:23892"
endpoints="http://127.0.0.1:23790,http://127.0.0.1:23791,http://127.0.0.1:23792"
for i in 0 1 2; do
  etcd --name "e$i" --data-dir "$state/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2389$i" --initial-advertise-peer-urls "http://127.0.0.1:2389$i" \
    --initial-cluster "$initial" --initial-cluster-state new > "$state/etcd-$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:2379$i/health" | grep -q '"true"' && break
    sleep 0.1
  done
done

node() { # name site http-port rtsp-port [microscope]
  local cfg="$state/$1.json" scopes="[]"
  [ -n "${5:-}" ] && scopes="[{\"id\": \"$5\", \"uri\": \"sim://synthetic\"}]"
  cat > "$cfg" <<EOF
{"video": {"width": 640, "height": 360, "framerate": 15, "bitrate_kbps": 800},
 "state_dir": "$state/$1",
 "cluster": {"etcd": ["${endpoints//,/\", \"}"], "node": "$1", "site": "$2"},
 "microscopes": $scopes}
EOF
  "$build/orchestrator/livemicrod" --config "$cfg" --http-port "$3" --rtsp-port "$4" > "$state/$1.log" 2>&1 &
  pids+=($!)
}
node node-a lab 8081 8555 scope-1
node node-b lab 8082 8556 scope-2
node node-c remote-site 8083 8557

sleep 3
echo "LiveMicro edge cloud on 127.0.0.1 (state in $state)"
echo "  etcd members:  $endpoints"
echo "  node-a (site lab):          http://127.0.0.1:8081  rtsp://127.0.0.1:8555  home of scope-1"
echo "  node-b (site lab):          http://127.0.0.1:8082  rtsp://127.0.0.1:8556  home of scope-2"
echo "  node-c (site remote-site):  http://127.0.0.1:8083  rtsp://127.0.0.1:8557"
echo "  admin token:   $LIVEMICRO_ADMIN_TOKEN"
echo "  status:        $build/orchestrator/livemicroctl --server http://127.0.0.1:8081 \\"
echo "                   --token $LIVEMICRO_ADMIN_TOKEN cluster status"
echo "Ctrl-C stops it."
wait
