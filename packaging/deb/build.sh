#!/usr/bin/env bash
# Build dist/<release>/instance-boot-agent_<version>+<os><n>_<arch>.deb with dpkg-deb (no
# debhelper needed), for one release with that release's own interpreter and libraries.
#
#   DIST=trixie packaging/deb/build.sh      (make deb DIST=trixie)
#
# DIST defaults to this machine's release. On a machine of that release the package is built
# here; for another Debian release, inside that release's own root (scripts/debian-root: made
# once with debootstrap, cached in .cache/roots/<release>) by this same script.
# PYTHON picks the interpreter where the release's default is too old (Ubuntu 22.04:
# PYTHON=python3.11): a name under /usr/bin or an absolute path, never a pyenv/other one on
# PATH. The package depends on that interpreter's own package (python3.11, python3.13, ...).
#
# The package carries its own virtual environment at /opt/instance-boot-agent, made with
# that interpreter, holding the agent and its runtime dependencies only. The venv is built in
# a staging directory: its text files that name the staging path (console-script shebangs,
# activate scripts) are rewritten to the final path, byte code is compiled with the final
# path recorded, and /usr/bin/agent is a tiny script whose shebang is the venv's python.
#
# Inputs are hashed: an unchanged tree reuses the last .deb (make e2e calls this each run).
# Caches: .cache/pip (wheels, e.g. systemd-python compiled once per interpreter; under
# $AGENT_CACHE when set, like the releases' roots), .cache/deb/<release> (staging).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
NAME=instance-boot-agent
PREFIX=/opt/$NAME
HOST_RELEASE=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
DIST=${DIST:-$HOST_RELEASE}
PYTHON=${PYTHON:-python3}
case "$DIST" in
  "" | *[!a-z]*) echo "deb: DIST must name a release (bookworm, trixie, ...), not '$DIST'" >&2
                 exit 2 ;;
esac
CACHE=$ROOT/.cache/deb/$DIST
STAGE=$CACHE/root
OUTDIR=$ROOT/dist/$DIST
export PIP_CACHE_DIR=${AGENT_CACHE:-$ROOT/.cache}/pip PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

inputs_hash() {
  { echo "$DIST $PYTHON"
    find agent systemd packaging/deb packaging/bin packaging/slim-venv.sh packaging/agent.toml \
      pyproject.toml setup.py \
      scripts/gen_cli_docs.py \
      -type f \
      ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}
HASH=$(inputs_hash)
BUILT=$(find "$OUTDIR" -maxdepth 1 -name "${NAME}_*.deb" 2>/dev/null | head -1 || true)
if [ -n "$BUILT" ] && [ "$(cat "$CACHE/inputs.sha256" 2>/dev/null)" = "$HASH" ]; then
  echo "deb: $BUILT is up to date"
  exit 0
fi

if [ "$DIST" != "$HOST_RELEASE" ]; then
  # Another release: this same script, inside that release's root.
  if [ "$(. /etc/os-release && echo "${ID:-}")" != debian ]; then
    echo "deb: this machine runs ${HOST_RELEASE:-an unknown release}; build the $DIST package" \
         "on $DIST itself (roots of other releases are made on Debian only)" >&2
    exit 1
  fi
  echo "deb: building for $DIST inside its own root (scripts/debian-root $DIST)"
  exec scripts/debian-root "$DIST" -- env DIST="$DIST" PYTHON="$PYTHON" packaging/deb/build.sh
fi

case "$PYTHON" in /*) ;; *) PYTHON=/usr/bin/$PYTHON ;; esac
[ -x "$PYTHON" ] || { echo "deb: no interpreter $PYTHON (install it, or choose another:" \
                           "PYTHON=python3.12)" >&2; exit 1; }
BASE_PYTHON=$(readlink -f "$PYTHON")   # e.g. /usr/bin/python3.13
PYVER=$("$BASE_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if ! "$BASE_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "deb: $BASE_PYTHON is Python $PYVER; the agent needs 3.11 or newer" \
       "(e.g. PYTHON=python3.11 where the release has it)" >&2
  exit 1
fi
VERSION=$("$BASE_PYTHON" -c \
  'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
# One package per release: the version says which (0.1.0+deb13, 0.1.0+ubuntu24.04), so that
# one repository can hold them all.
# shellcheck disable=SC1091
OS_TAG=$(. /etc/os-release && case "$ID" in debian) echo "deb${VERSION_ID:-$VERSION_CODENAME}" ;;
         *) echo "$ID${VERSION_ID:-$VERSION_CODENAME}" ;; esac)
DEB_VERSION=$VERSION+$OS_TAG
ARCH=$(dpkg --print-architecture)
OUT=$OUTDIR/${NAME}_${DEB_VERSION}_${ARCH}.deb

# systemd-python compiles against libsystemd and Python.h of the interpreter we use.
need=()
for pkg in "python$PYVER-dev" libsystemd-dev pkg-config gcc "python$PYVER-venv"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "deb: missing Debian packages: ${need[*]}" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "deb: building $NAME $DEB_VERSION ($ARCH) for $DIST with $BASE_PYTHON"
rm -rf "$STAGE" "$CACHE/src" "$CACHE/doctools" "$CACHE/docs"
mkdir -p "$STAGE" "$CACHE/src" "$OUTDIR"
# Build from a copy: no build/ or egg-info litter in the shared tree.
cp -a agent pyproject.toml setup.py "$CACHE/src/"
mkdir -p "$CACHE/src/packaging" && cp -a packaging/bin "$CACHE/src/packaging/"
if [ -f README.md ]; then cp README.md "$CACHE/src/"; else echo "$NAME" >"$CACHE/src/README.md"; fi
find "$CACHE/src" -name __pycache__ -prune -exec rm -rf {} +

VENV=$STAGE$PREFIX
"$BASE_PYTHON" -m venv "$VENV"
# --use-pep517: build wheels (cached in .cache/pip: systemd-python compiles once); the
# grep drops the local mirror's noise about index directories it does not have.
"$VENV/bin/python" -m pip install --quiet --no-compile --use-pep517 "$CACHE/src" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# Runtime only: the simulated cloud (moto) and the installers stay out of the image.
rm -rf "$VENV/lib/python$PYVER/site-packages/agent/sim"
packaging/slim-venv.sh "$VENV/bin/python" "$VENV/lib/python$PYVER/site-packages"
# agent(8) and the bash completion, from the packaged agent's own parser (so without demo);
# the generators (pyproject's docs extra) are build tools: installed beside the venv, not in it.
DOC_TOOLS=$("$BASE_PYTHON" -c 'import tomllib; print(" ".join(tomllib.load(open(
  "pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))')
# shellcheck disable=SC2086 # one requirement per word
"$VENV/bin/python" -m pip install --quiet --no-compile --target "$CACHE/doctools" $DOC_TOOLS \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
PYTHONPATH="$CACHE/doctools" "$VENV/bin/python" -B scripts/gen_cli_docs.py "$CACHE/docs" >/dev/null
"$VENV/bin/python" -m pip uninstall --quiet --yes pip setuptools
rm -f "$VENV"/bin/activate* "$VENV"/bin/pip* "$VENV"/bin/Activate.ps1 \
  "$VENV"/lib/python"$PYVER"/site-packages/instance_boot_agent-*.dist-info/direct_url.json
# Anything that still names the staging directory now names the installed one.
grep -rlI --null -F "$STAGE" "$VENV" | xargs -0 -r sed -i "s|$STAGE||g"
# Byte code for the final path; unchecked-hash: dpkg owns these files, no mtime checks.
"$VENV/bin/python" -m compileall -q -j0 --invalidation-mode unchecked-hash \
  -s "$STAGE" -p / "$VENV/lib"

install -d "$STAGE/usr/bin" "$STAGE/usr/lib/systemd/system" "$STAGE/usr/lib/systemd/system-preset" \
  "$STAGE/etc/agent" "$STAGE/usr/share/doc/$NAME" "$STAGE/usr/share/man/man8" \
  "$STAGE/usr/share/bash-completion/completions" "$STAGE/DEBIAN"
# The launcher, run by the agent's own environment; -I: isolated from PYTHON* variables and
# from the user's site-packages.
sed "1s|^#!python\$|#!$PREFIX/bin/python3 -I|" packaging/bin/agent >"$STAGE/usr/bin/agent"
chmod 0755 "$STAGE/usr/bin/agent"
install -m 0644 systemd/agent.service systemd/agent-ready.target systemd/run-agent-secrets.mount \
  "$STAGE/usr/lib/systemd/system/"
install -m 0644 systemd/90-agent.preset "$STAGE/usr/lib/systemd/system-preset/"
install -m 0644 packaging/agent.toml "$STAGE/etc/agent/agent.toml"
printf 'instance-boot-agent\nLicense: Apache-2.0\n' >"$STAGE/usr/share/doc/$NAME/copyright"
gzip -9n <"$CACHE/docs/agent.8" >"$STAGE/usr/share/man/man8/agent.8.gz"
install -m 0644 "$CACHE/docs/agent.bash" "$STAGE/usr/share/bash-completion/completions/agent"

install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$STAGE/DEBIAN/"
install -m 0644 packaging/deb/conffiles "$STAGE/DEBIAN/"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$DEB_VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@PYVER@/$PYVER/" \
    -e "s/@SIZE@/$SIZE/" packaging/deb/control.in >"$STAGE/DEBIAN/control"
find "$STAGE" -type d -exec chmod 0755 {} +
chmod -R go-w "$STAGE"

rm -f "$OUTDIR"/"${NAME}"_*_"$ARCH".deb
dpkg-deb --root-owner-group -Zxz -z6 --build "$STAGE" "$OUT" >/dev/null
echo "$HASH" >"$CACHE/inputs.sha256"
echo "deb: $OUT ($(du -h "$OUT" | cut -f1))"
