#!/usr/bin/env bash
# Installs what peapod needs on Debian 12, builds it, and prepares the test image.
# Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in busybox-static umoci attr pkg-config gcc libseccomp-dev libelf-dev zlib1g-dev containernetworking-plugins iproute2 iptables nftables conntrack openssl python3-grpcio tzdata protobuf-compiler libprotobuf-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
# Storage: the local plugin's mkfs, the NFS client library (and the test NFS
# server), Ceph for the RBD plugin (and the test cluster); Prometheus and
# promtool for the metrics tests; crun and runc, which the side-by-side bench
# starts containers through beside the shim. Without recommends: Ceph's pull in
# a mgr and python modules nothing here uses, Prometheus' a node exporter,
# runc's criu. The pull tests push to Debian's docker-registry with skopeo.
storage=()
for p in e2fsprogs libnfs-dev libnfs-utils nfs-ganesha nfs-ganesha-vfs rpcbind ceph-mon ceph-osd ceph-common rbd-fuse prometheus crun runc docker-registry skopeo etcd-server etcd-client; do
  dpkg -s "$p" >/dev/null 2>&1 || storage+=("$p")
done
if [ ${#need[@]} -gt 0 ] || [ ${#storage[@]} -gt 0 ]; then
  apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if [ ${#storage[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${storage[@]}"
  # The package starts a Prometheus service where systemd runs; the node asked
  # for none (the tests start their own on a free port), so one just installed is stopped.
  # The same for the registry.
  if [ -d /run/systemd/system ]; then
    for s in prometheus docker-registry etcd; do
      if [[ " ${storage[*]} " == *" $s "* ]]; then
        systemctl disable --now "$s" >/dev/null 2>&1 || true
      fi
    done
  fi
fi
# The etcd client's build compiles etcd's .proto files: protoc and its
# well-known types (protobuf-compiler, libprotobuf-dev, above). The cluster
# tests start their own etcd members (scripts/etcd-test-cluster.sh); the
# package's service is stopped above where systemd runs it.
# kubectl for the tests that drive peapod the way Kubernetes users do.
bash scripts/install-kubectl.sh
profile=${PEAPOD_PROFILE:-debug}
# The test build carries the fault-injection points (tests/tests/supervision.rs
# crashes actors and kills the daemon at chosen moments); release builds never do.
if [ "$profile" = release ]; then
  cargo build --release --workspace
else
  cargo build --workspace --features peapod/fault-injection
fi
# The built-in volume plugins go where the daemon loads plugins from by default,
# owned by root and writable by nobody else (the daemon refuses anything else).
install -d -m 0755 /usr/lib/peapod/plugins
for p in emptydir hostpath local nfs rbd; do
  install -m 0755 -o root -g root "target/$profile/libpeapod_$p.so" "/usr/lib/peapod/plugins/libpeapod_$p.so"
done
# The NFS plugin's userspace client (for kernels without NFS).
install -m 0755 -o root -g root "target/$profile/peapod-nfs-fuse" /usr/lib/peapod/peapod-nfs-fuse
bash scripts/build-test-image.sh /var/lib/peapod/test-image/busybox
