#!/usr/bin/env bash
# Set up everything usp-feast needs on this machine: a Java 17 JDK, redis-server, openssl,
# chromium and prometheus (system packages), the .venv with the pinned dependencies, usp-feast
# itself in editable mode, the Flink Kafka connector jars, and the project's Flink operators
# (java/, compiled into a jar).
#
# Idempotent: a second run checks and skips, and takes seconds. The dependency install is skipped
# while .venv/.usp-installed holds the hash of requirements/ and pyproject.toml.
#
# Usage: scripts/setup.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
PY="$VENV/bin/python"
UV="$VENV/bin/uv"
UV_VERSION=0.9.5
STAMP="$VENV/.usp-installed"

step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- (a) system packages ------------------------------------------------------------------------

java_major() {
    # `java -version` prints e.g. `openjdk version "17.0.15"` (or "1.8.0_392" for Java 8) to stderr.
    command -v java >/dev/null 2>&1 || return 0
    java -version 2>&1 \
        | awk -F'"' '/version/ && !done { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); done = 1 }' \
        || true
}

javac_major() {
    # `javac -version` prints e.g. `javac 17.0.15`.
    command -v javac >/dev/null 2>&1 || return 0
    javac -version 2>&1 | awk '/^javac/ { split($2, v, "."); print v[1]; exit }' || true
}

missing=()
java_version="$(java_major)"
javac_version="$(javac_major)"
# The JDK (not only the JRE): setup compiles the project's Flink operators in java/.
if ! [[ "$java_version" =~ ^[0-9]+$ ]] || [ "$java_version" -lt 17 ] \
    || ! [[ "$javac_version" =~ ^[0-9]+$ ]] || [ "$javac_version" -lt 17 ]; then
    missing+=(openjdk-17-jdk-headless)
fi
if ! command -v redis-server >/dev/null 2>&1; then
    missing+=(redis-server)
fi
# Debian's browser for the explorer's browser tests (Playwright drives it; it downloads none).
if ! command -v chromium >/dev/null 2>&1; then
    missing+=(chromium)
fi
# openssl: the secured-Redis tests make their CA and certificates with it.
if ! command -v openssl >/dev/null 2>&1; then
    missing+=(openssl)
fi
# Prometheus and promtool: the tests load the generated rules into a real Prometheus.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    missing+=(prometheus)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    step "system packages: java $java_version, redis-server $(redis-server --version | awk '{print $3}' | cut -d= -f2), chromium and prometheus present"
else
    step "system packages: installing ${missing[*]} with apt-get"
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        die "${missing[*]} must be installed, but this is not root and sudo is missing; install ${missing[*]} as root, then rerun scripts/setup.sh."
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "${missing[*]} must be installed and apt-get is not available; install ${missing[*]} with this system's package manager, then rerun scripts/setup.sh."
    "${SUDO[@]}" apt-get update \
        || die "apt-get update failed, so ${missing[*]} cannot be installed; fix the apt sources (see the output above), then rerun scripts/setup.sh."
    # One package at a time so that a failure names the package that failed.
    for package in "${missing[@]}"; do
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y --no-install-recommends "$package" \
            || die "apt-get could not install $package; install it by hand (apt-get install $package), then rerun scripts/setup.sh."
    done
fi

# --- (b) virtual environment and uv -------------------------------------------------------------

if [ -x "$PY" ]; then
    step "virtualenv: $VENV present ($("$PY" --version 2>&1))"
else
    base=""
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            base="$candidate"
            break
        fi
    done
    [ -n "$base" ] || die "Python 3.11 is required (pyproject.toml: requires-python >=3.11,<3.12) and neither python3.11 nor python3 is 3.11; install python3.11, then rerun scripts/setup.sh."
    step "virtualenv: creating $VENV with $(command -v "$base") ($("$base" --version 2>&1))"
    "$base" -m venv "$VENV"
fi

if [ -x "$UV" ]; then
    step "uv: $("$UV" --version 2>/dev/null) present"
else
    step "uv: installing uv==$UV_VERSION into $VENV"
    "$PY" -m pip install --quiet "uv==$UV_VERSION" \
        || die "pip could not install uv==$UV_VERSION into $VENV; check the network or the package index, then rerun scripts/setup.sh."
fi

# --- (c) Python dependencies and usp-feast ------------------------------------------------------

inputs_hash() {
    # Everything that decides what gets installed; file names are part of the hash.
    sha256sum requirements/*.txt requirements/*.in pyproject.toml | sha256sum | cut -d' ' -f1
}

want="$(inputs_hash)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" = "$have" ] && [ -x "$VENV/bin/usp" ]; then
    step "python packages: up to date (requirements/ and pyproject.toml unchanged)"
else
    step "python packages: installing requirements/base.in pinned by requirements/constraints.txt"
    rm -f "$STAMP"
    # --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set
    # (CI here) every process would then compile feast & co. from source at each start
    # (seconds per process, paid again by every Flink TaskManager's embedded interpreter).
    "$UV" pip install --python "$PY" --compile-bytecode -c requirements/constraints.txt -r requirements/base.in \
        || die "installing requirements/base.in failed (see above); fix the pins in requirements/, then rerun scripts/setup.sh."
    step "python packages: installing usp-feast in editable mode"
    "$UV" pip install --python "$PY" --no-deps -e . \
        || die "installing usp-feast itself failed (see above); fix pyproject.toml, then rerun scripts/setup.sh."
    # The hash taken before installing: if requirements/ changed meanwhile, the next run reinstalls.
    printf '%s\n' "$want" > "$STAMP"
fi

# --- (d) Flink Kafka connector jars -------------------------------------------------------------
# PyFlink ships no Kafka connector. The official Apache jars (connector 4.0.1-2.0, kafka-clients
# 3.9.1) come inside this PyPI wheel; only the two jars are extracted, the wheel is never
# installed (it carries Flink 2.0 core jars that would clash with apache-flink 2.3).

JARS_WHEEL="shigawire-apache-flink-libraries==2.0.0.post1"
JARS_DIR="$VENV/flink-jars"
if [ -f "$JARS_DIR/flink-connector-kafka.jar" ] && [ -f "$JARS_DIR/kafka-clients.jar" ]; then
    step "flink jars: present in $JARS_DIR"
else
    step "flink jars: extracting the Kafka connector from $JARS_WHEEL"
    download="$(mktemp -d)"
    "$PY" -m pip download --quiet --no-deps --dest "$download" "$JARS_WHEEL" \
        || die "could not download $JARS_WHEEL (the Flink Kafka connector jars); check the package index, then rerun scripts/setup.sh."
    mkdir -p "$JARS_DIR"
    "$PY" - "$download" "$JARS_DIR" <<'PYEOF' || die "could not extract the Kafka connector jars from $JARS_WHEEL."
import sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as archive:
    for name in ("flink-connector-kafka.jar", "kafka-clients.jar"):
        (Path(sys.argv[2]) / name).write_bytes(archive.read(f"pyflink/lib/{name}"))
PYEOF
    rm -rf "$download"
fi

# --- (e) the project's Flink operators ---------------------------------------------------------
# Small Java operators the signal jobs use around their Python step (see usp_feast/flink.py),
# compiled against the Flink inside the PyFlink wheel. Rebuilt when a source file changes.

OPS_JAR="$JARS_DIR/usp-flink-ops.jar"
OPS_STAMP="$JARS_DIR/.usp-flink-ops"
ops_hash="$(find java -name '*.java' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [ -f "$OPS_JAR" ] && [ "$(cat "$OPS_STAMP" 2>/dev/null)" = "$ops_hash" ]; then
    step "flink operators: $OPS_JAR up to date"
else
    step "flink operators: compiling java/ into $OPS_JAR"
    flink_lib="$("$PY" -c 'import pathlib, pyflink; print(pathlib.Path(pyflink.__file__).parent / "lib")')"
    classes="$(mktemp -d)"
    find java -name '*.java' -print0 | xargs -0 javac --release 17 -nowarn -cp "$flink_lib/*" -d "$classes" \
        || die "javac could not compile java/ (see the errors above)."
    "$PY" - "$classes" "$OPS_JAR" <<'PYEOF' || die "could not write $OPS_JAR."
import sys, zipfile
from pathlib import Path
classes = Path(sys.argv[1])
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED) as jar:
    jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    for path in sorted(classes.rglob("*.class")):
        jar.write(path, path.relative_to(classes).as_posix())
PYEOF
    rm -rf "$classes"
    echo "$ops_hash" > "$OPS_STAMP"
fi

step "setup done; start the local stack with .venv/bin/usp dev up"
