#!/usr/bin/env bash
# Builds a minimal busybox OCI image layout for peapod's tests, from Debian's
# statically linked busybox, so tests never need a registry.
#
# Usage: scripts/build-test-image.sh [LAYOUT_DIR]
#   LAYOUT_DIR defaults to /var/lib/peapod/test-image/busybox.
#
# The layout holds one image tagged `latest` (umoci writes the bare tag
# "latest" as org.opencontainers.image.ref.name), so import it with a name:
#   ImageStore::import(LAYOUT_DIR, Some("busybox"))  ->  docker.io/library/busybox:latest
#
# Idempotent: if LAYOUT_DIR already has a `latest` tag nothing is done. The
# layout is built in a sibling temporary directory and renamed into place, so
# an interrupted run never leaves a half-built layout behind.
#
# Needs root (chroot, and root-owned files in the image) and the Debian
# packages busybox-static and umoci; attr (setfattr) is installed as well
# because peapod's layer unpacker uses it.
set -euo pipefail

LAYOUT="${1:-/var/lib/peapod/test-image/busybox}"
TAG=latest
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf 'build-test-image: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (chroot and root-owned image files)"
    exit 1
fi

# Install what is missing; a no-op when everything is present.
missing=()
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || missing+=(busybox-static)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
command -v setfattr >/dev/null 2>&1 || missing+=(attr)
if ((${#missing[@]} > 0)); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

BUSYBOX=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)
if [[ -z $BUSYBOX || ! -x $BUSYBOX ]]; then
    log "busybox-static does not provide bin/busybox"
    exit 1
fi

if [[ -f $LAYOUT/index.json ]] && umoci ls --layout "$LAYOUT" 2>/dev/null | grep -qx "$TAG"; then
    log "$LAYOUT already has tag $TAG; nothing to do"
    exit 0
fi
if [[ -e $LAYOUT ]]; then
    # Only replace what is recognisably an (incomplete) OCI layout or an empty
    # directory; anything else at that path is not ours to delete.
    if [[ -f $LAYOUT/oci-layout ]] || [[ -d $LAYOUT && -z $(ls -A "$LAYOUT") ]]; then
        log "replacing incomplete layout at $LAYOUT"
    else
        log "$LAYOUT exists and is not an OCI layout; refusing to overwrite it"
        exit 1
    fi
fi

parent=$(dirname "$LAYOUT")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.build-test-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- root file system ---
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,root,tmp,proc,sys,dev,var,home}
install -m 0755 "$BUSYBOX" "$rootfs/bin/busybox"
# Inside the chroot /proc/self/exe is unreadable, so busybox links the applets
# to its absolute argv[0], /bin/busybox: right for the container's root.
chroot "$rootfs" /bin/busybox --install -s /bin
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nobody:x:65534:
EOF
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
test -x "$rootfs/bin/sh"

# --- OCI layout ---
stage=$work/layout
umoci init --layout "$stage"
umoci new --image "$stage:$TAG"
# One layer holding the whole root file system.
umoci insert --image "$stage:$TAG" "$rootfs" /
umoci config --image "$stage:$TAG" \
    --config.cmd sh \
    --config.env "PATH=$IMAGE_PATH" \
    --author "peapod build-test-image.sh"
# Drop the intermediate manifests/configs umoci left behind.
umoci gc --layout "$stage"

rm -rf "$LAYOUT"
mv "$stage" "$LAYOUT"
log "built $LAYOUT:$TAG"
umoci stat --image "$LAYOUT:$TAG" >&2 || true
