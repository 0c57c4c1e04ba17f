#!/usr/bin/env bash
# A 3-member etcd cluster on 127.0.0.1 for the tests and benches (Debian's
# etcd-server; scripts/setup.sh installs it). Data, logs and pids in WORKDIR.
#   etcd-test-cluster.sh up WORKDIR C1 P1 C2 P2 C3 P3
#       starts members m1..m3 (client port Cn, peer port Pn), waits until all
#       are healthy and prints "etcd ready"; WORKDIR/mN.sh starts member N
#       again (after a kill) with its existing data.
#   etcd-test-cluster.sh down WORKDIR
#       stops every member by its pid.
# ETCD_HOST (default 127.0.0.1) is the address members listen and advertise on.
# ETCD_TLS_DIR, when set, holds ca.crt, server.crt and server.key: clients
# then speak TLS and must show a certificate signed by ca.crt (client.crt and
# client.key there are used for the health check).
set -euo pipefail
cmd=${1:?up|down}; W=${2:?WORKDIR}
stop() {
  for f in "$W"/m*.pid; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    kill -KILL "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
  done
  return 0
}
case "$cmd" in
down) stop; exit 0 ;;
up) ;;
*) echo "usage: $0 up WORKDIR C1 P1 C2 P2 C3 P3 | down WORKDIR" >&2; exit 2 ;;
esac
shift 2
[ $# -eq 6 ] || { echo "up needs three client and peer port pairs" >&2; exit 2; }
ports=("$@")
H=${ETCD_HOST:-127.0.0.1}
T=${ETCD_TLS_DIR:-}
scheme=http tls_flags="" ctl_tls=()
if [ -n "$T" ]; then
  scheme=https
  tls_flags="--cert-file $T/server.crt --key-file $T/server.key --client-cert-auth --trusted-ca-file $T/ca.crt"
  ctl_tls=(--cacert "$T/ca.crt" --cert "$T/client.crt" --key "$T/client.key")
fi
mkdir -p "$W"
cluster=""
for i in 1 2 3; do
  cluster+="m$i=http://$H:${ports[$(( (i-1)*2+1 ))]},"
done
cluster=${cluster%,}
for i in 1 2 3; do
  c=${ports[$(( (i-1)*2 ))]} p=${ports[$(( (i-1)*2+1 ))]}
  # Fast elections, as the reference recipe measured (100 ms heartbeats, 1 s election timeout).
  cat > "$W/m$i.sh" <<EOF
#!/usr/bin/env bash
nohup etcd --name m$i --data-dir "$W/m$i.data" \\
  --listen-client-urls $scheme://$H:$c --advertise-client-urls $scheme://$H:$c $tls_flags \\
  --listen-peer-urls http://$H:$p --initial-advertise-peer-urls http://$H:$p \\
  --initial-cluster $cluster --initial-cluster-token peapod-test --initial-cluster-state new \\
  --heartbeat-interval 100 --election-timeout 1000 --logger zap --log-level warn \\
  >> "$W/m$i.log" 2>&1 &
echo \$! > "$W/m$i.pid"
EOF
  bash "$W/m$i.sh"
done
endpoints="$scheme://$H:${ports[0]},$scheme://$H:${ports[2]},$scheme://$H:${ports[4]}"
for _ in $(seq 1 100); do
  if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" "${ctl_tls[@]}" --dial-timeout 1s endpoint health >/dev/null 2>&1; then
    echo "etcd ready"
    exit 0
  fi
  sleep 0.2
done
echo "etcd did not become healthy in 20 s:" >&2
tail -n 20 "$W"/m*.log >&2
stop
exit 1
