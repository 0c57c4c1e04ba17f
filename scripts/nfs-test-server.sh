#!/usr/bin/env bash
# A userspace NFS server for the tests: nfs-ganesha (VFS FSAL) + rpcbind on
# 127.0.0.1, exporting WORKDIR/export as /export over NFSv3 (and v4).
#   nfs-test-server.sh up WORKDIR     -> prints "nfs ready"; pids in WORKDIR/*.pid
#   nfs-test-server.sh down WORKDIR   -> stops what `up` started, by pid
# Packages: nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils (scripts/setup.sh).
set -euo pipefail
cmd=${1:?up|down}; W=${2:?WORKDIR}
stop() {
  for f in ganesha.pid rpcbind.pid; do
    [ -f "$W/$f" ] || continue
    p=$(cat "$W/$f")
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    rm -f "$W/$f"
    # rpcbind leaves its socket, lock and warm-start state behind.
    [ "$f" = rpcbind.pid ] && rm -f /run/rpcbind.sock /run/rpcbind.lock /run/rpcbind/portmap.xdr /run/rpcbind/rpcbind.xdr
  done
  return 0
}
case "$cmd" in
down) stop; exit 0 ;;
up) ;;
*) echo "usage: $0 up|down WORKDIR" >&2; exit 2 ;;
esac
mkdir -p "$W"/{export,recov,run}
chmod 0777 "$W/export"
cat > "$W/ganesha.conf" <<CONF
NFS_CORE_PARAM {
    Bind_addr = 127.0.0.1;
    NFS_Port = 2049;
    MNT_Port = 20048;
    Protocols = 3, 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
    mount_path_pseudo = true;
    Plugins_Dir = "/usr/lib/x86_64-linux-gnu/ganesha";
}
NFSv4 {
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = "$W/recov";
    Only_Numeric_Owners = true;
}
EXPORT {
    Export_Id = 1;
    Path = "$W/export";
    Pseudo = "/export";
    Protocols = 3, 4;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = EVENT; }
CONF
# NFSv3 needs a portmapper (ganesha exits without one). Never `rpcbind -h`:
# bookworm's aborts with a double free.
if ! rpcinfo -p 127.0.0.1 >/dev/null 2>&1; then
  setsid rpcbind -f >"$W/rpcbind.log" 2>&1 </dev/null &
  echo $! >"$W/rpcbind.pid"
  for _ in $(seq 1 50); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.1; done
fi
setsid ganesha.nfsd -F -f "$W/ganesha.conf" -L "$W/ganesha.log" -p "$W/run/ganesha.pid" -N NIV_EVENT \
  >"$W/ganesha.out" 2>&1 </dev/null &
echo $! >"$W/ganesha.pid"
for _ in $(seq 1 100); do
  if rpcinfo -t 127.0.0.1 nfs 3 >/dev/null 2>&1 && nfs-ls nfs://127.0.0.1/export >/dev/null 2>&1; then
    echo "nfs ready"; exit 0
  fi
  if ! kill -0 "$(cat "$W/ganesha.pid")" 2>/dev/null; then
    echo "ganesha died:" >&2; tail -20 "$W/ganesha.log" >&2; stop; exit 1
  fi
  sleep 0.1
done
echo "nfs not ready after 10 s" >&2; tail -20 "$W/ganesha.log" >&2; stop; exit 1
