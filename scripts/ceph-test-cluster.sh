#!/usr/bin/env bash
# A single-node Ceph cluster for the tests: one mon and one memstore OSD on
# 127.0.0.1 (no mgr), pool "rbd" with size 1, cephx with an admin keyring.
#   ceph-test-cluster.sh up WORKDIR    -> prints "ceph ready"; WORKDIR/ceph.conf, WORKDIR/ceph.client.admin.keyring
#   ceph-test-cluster.sh down WORKDIR  -> stops what `up` started, by pid
# Packages: ceph-mon ceph-osd ceph-common rbd-fuse (scripts/setup.sh). Without a
# mgr some ceph commands hang: every call here has a timeout.
set -euo pipefail
cmd=${1:?up|down}; D=${2:?WORKDIR}
stop() {
  for f in osd.pid mon.pid; do
    [ -f "$D/$f" ] || continue
    p=$(cat "$D/$f")
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    rm -f "$D/$f"
  done
  return 0
}
case "$cmd" in
down) stop; exit 0 ;;
up) ;;
*) echo "usage: $0 up|down WORKDIR" >&2; exit 2 ;;
esac
mkdir -p "$D"/{mon/a,osd/0,run,log}
FSID=$(cat /proc/sys/kernel/random/uuid)
cat >"$D/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
mon initial members = a
public network = 127.0.0.0/8
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $D/ceph.client.admin.keyring
run dir = $D/run
log file = $D/log/\$cluster-\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
mon data avail warn = 2
mon data avail crit = 1
osd objectstore = memstore
memstore device bytes = 1073741824
[client]
admin socket = $D/run/\$cluster-\$name.\$pid.asok
[mon.a]
mon data = $D/mon/a
admin socket = $D/run/\$cluster-\$name.asok
[osd.0]
osd data = $D/osd/0
keyring = $D/osd/0/keyring
admin socket = $D/run/\$cluster-\$name.asok
CONF
trap 'stop' ERR
C="timeout 20 ceph -c $D/ceph.conf"
ceph-authtool --create-keyring "$D/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$D/ceph.client.admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$D/mon.keyring" --import-keyring "$D/ceph.client.admin.keyring" >/dev/null
monmaptool --create --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon -c "$D/ceph.conf" --mkfs -i a --monmap "$D/monmap" --keyring "$D/mon.keyring"
setsid ceph-mon -c "$D/ceph.conf" -i a -f >"$D/log/mon.out" 2>&1 </dev/null &
echo $! >"$D/mon.pid"
for _ in $(seq 1 60); do timeout 5 ceph -c "$D/ceph.conf" mon stat >/dev/null 2>&1 && break; sleep 0.5; done
# The OSD's keyring is registered before --mkfs (mkfs fetches its config from the mon).
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
ceph-authtool --create-keyring "$D/osd/0/keyring" --gen-key -n osd.0 >/dev/null
$C auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' -i "$D/osd/0/keyring"
test "$($C osd new "$OSD_UUID")" = 0
ceph-osd -c "$D/ceph.conf" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$D/log/osd-mkfs.out" 2>&1
setsid ceph-osd -c "$D/ceph.conf" -i 0 -f >"$D/log/osd.out" 2>&1 </dev/null &
echo $! >"$D/osd.pid"
for _ in $(seq 1 120); do
  $C osd dump 2>/dev/null | grep -q '^osd.0 up' && break
  sleep 0.5
done
$C osd dump | grep -q '^osd.0 up' || { echo "osd not up" >&2; tail -20 "$D/log/osd.out" >&2; stop; exit 1; }
$C osd pool create rbd 8 8 >/dev/null 2>&1
timeout 30 rbd -c "$D/ceph.conf" pool init rbd
# Ready: a write round trip through the OSD.
for _ in $(seq 1 60); do
  echo ok | timeout 10 rados -c "$D/ceph.conf" -p rbd put readiness-probe - 2>/dev/null && break
  sleep 0.5
done
timeout 10 rados -c "$D/ceph.conf" -p rbd rm readiness-probe
echo "ceph ready"
