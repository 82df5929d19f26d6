#!/usr/bin/env bash
# Build dist/instance-boot-agent-<version>-1.<arch>.rpm with rpmbuild from agent.spec.
#
# First a wheelhouse (.cache/rpm/wheels) is built with the target interpreter, so that the
# spec's %install is offline; then rpmbuild runs with its _topdir under .cache/rpm.
# Inputs are hashed: an unchanged tree reuses the last .rpm.
# On Amazon Linux 2023 and RHEL 9 (production) the interpreter is /usr/bin/python3.11, or the
# one PYTHON names (PYTHON=python3.12: a name under /usr/bin or an absolute path), and
# BuildRequires are checked. Elsewhere (a Debian host: a check of the spec) it is the
# system's python3 and --nodeps is passed, since no RPM database lists the build dependencies.
# The RPM requires the interpreter it was built with.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
NAME=instance-boot-agent
CACHE=$ROOT/.cache/rpm
export PIP_CACHE_DIR=${AGENT_CACHE:-$ROOT/.cache}/pip PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

PYTHON=${RPM_PYTHON:-${PYTHON:-python3}}
case "$PYTHON" in /*) ;; *) PYTHON=/usr/bin/$PYTHON ;; esac
if [ "$PYTHON" = /usr/bin/python3 ] && [ -x /usr/bin/python3.11 ] && [ -f /etc/system-release ]
then PYTHON=/usr/bin/python3.11   # AL2023, RHEL 9: python3 is 3.9
fi
[ -x "$PYTHON" ] || { echo "rpm: no interpreter $PYTHON (install it, or choose another: PYTHON=python3.12)" >&2
                      exit 1; }
PYTHON=$(readlink -f "$PYTHON")   # /usr/bin/python3.11: the spec requires its package
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "rpm: $PYTHON is older than Python 3.11 (the agent's minimum): PYTHON=python3.11" >&2
  exit 1
fi
NODEPS=()
rpm -q rpm >/dev/null 2>&1 || NODEPS=(--nodeps)   # not an RPM-based host
VERSION=$("$PYTHON" -c \
  'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

HASH=$({ echo "$PYTHON $VERSION ${NODEPS[*]}"
         find agent systemd packaging/rpm packaging/bin packaging/slim-venv.sh packaging/agent.toml pyproject.toml setup.py \
           scripts/gen_cli_docs.py -type f \
           ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
       } | sha256sum | cut -d' ' -f1)
BUILT=$(find "$ROOT/dist" -maxdepth 1 -name "$NAME-$VERSION-*.rpm" 2>/dev/null | head -1)
if [ -n "$BUILT" ] && [ "$(cat "$CACHE/inputs.sha256" 2>/dev/null)" = "$HASH" ]; then
  echo "rpm: $BUILT is up to date"
  exit 0
fi

echo "rpm: building $NAME $VERSION with $PYTHON"
rm -rf "$CACHE/src" "$CACHE/wheels" "$CACHE/topdir"
mkdir -p "$CACHE/src" "$CACHE/topdir/SOURCES" "$ROOT/dist"
cp -a agent pyproject.toml setup.py "$CACHE/src/"
mkdir -p "$CACHE/src/packaging" && cp -a packaging/bin "$CACHE/src/packaging/"
if [ -f README.md ]; then cp README.md "$CACHE/src/"; else echo "$NAME" >"$CACHE/src/README.md"; fi
find "$CACHE/src" -name __pycache__ -prune -exec rm -rf {} +

# The wheelhouse: the agent and its runtime dependencies, built by the target interpreter, and
# the build-time generators of agent(8) and the bash completion (pyproject's docs extra).
[ -x "$CACHE/tools/bin/pip" ] || "$PYTHON" -m venv "$CACHE/tools"
DOC_TOOLS=$("$PYTHON" -c 'import tomllib; print(" ".join(tomllib.load(open(
  "pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))')
# shellcheck disable=SC2086 # one requirement per word
"$CACHE/tools/bin/pip" wheel --quiet --use-pep517 --wheel-dir "$CACHE/wheels" "$CACHE/src" \
  $DOC_TOOLS 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# Source0: what the spec installs besides the wheels.
tar -czf "$CACHE/topdir/SOURCES/$NAME-$VERSION.tar.gz" --transform "s|^|$NAME-$VERSION/|" \
  systemd/agent.service systemd/agent-ready.target systemd/run-agent-secrets.mount \
  systemd/90-agent.preset packaging/agent.toml packaging/bin/agent packaging/slim-venv.sh \
  scripts/gen_cli_docs.py

rm -f "$ROOT"/dist/"$NAME"-*.rpm
rpmbuild -bb --quiet "${NODEPS[@]}" \
  --define "_topdir $CACHE/topdir" \
  --define "_rpmdir $ROOT/dist" \
  --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
  --define "agent_version $VERSION" \
  --define "agent_python $PYTHON" \
  --define "wheelhouse $CACHE/wheels" \
  packaging/rpm/agent.spec
echo "$HASH" >"$CACHE/inputs.sha256"
for rpm in "$ROOT"/dist/"$NAME"-*.rpm; do echo "rpm: $rpm"; done
