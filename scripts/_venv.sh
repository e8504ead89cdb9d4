# Shared by scripts/test and scripts/demo: create .venv if missing and install the
# project with the given extras, skipping pip when nothing changed since last time.
# Usage: source scripts/_venv.sh; ensure_venv "test,dask"
ensure_venv() {
  local extras="$1"
  local py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$py" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  local stamp=".venv/.zmesh-installed-${extras//,/-}"
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing zambeze-mesh[$extras] into .venv (log: .venv/pip-install.log)"
    [ -f "$stamp" ] || echo "    the first install takes about 5 minutes and 1.8 GB (CPU PyTorch, MLflow, Dask)"
    # pip's own progress, one line per package (the full output goes to the log)
    if ! (set -o pipefail; .venv/bin/python -m pip install --disable-pip-version-check \
        --progress-bar off -e ".[$extras]" 2>&1 | tee .venv/pip-install.log | {
        grep --line-buffered -E '^(Collecting|Downloading|Installing collected|Successfully)' \
        | sed -u -e 's/^/    /' -e 's/^\(.\{110\}\).*/\1.../'; true; }); then
      tail -30 .venv/pip-install.log >&2
      echo "pip install failed" >&2
      return 1
    fi
    echo "$want" >"$stamp"
  fi
}

# apt-get install the named packages that are missing (only as root; once per run).
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "==> not root: cannot install ${missing[*]} (tests needing them will skip)"
    return 0
  fi
  if [ -z "${ZMESH_APT_UPDATED:-}" ]; then
    echo "==> apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    export ZMESH_APT_UPDATED=1
  fi
  echo "==> apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
