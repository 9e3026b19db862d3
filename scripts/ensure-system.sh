#!/usr/bin/env bash
# Make sure the system packages notiflow needs are present: python3-venv and redis-server
# (and chromium with --browser, the PostgreSQL server with --postgres). Uses what is on PATH;
# otherwise installs Debian's packages when running as root with apt-get; otherwise says what
# to do and fails.
set -euo pipefail

want=()
python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
for option in "$@"; do
  case "$option" in
    --browser)
      command -v chromium >/dev/null 2>&1 || want+=(chromium)
      ;;
    --postgres)
      # webapp/postgres.py runs Debian's server binaries (initdb, pg_ctl) for a private cluster in var/.
      compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 || want+=(postgresql)
      ;;
    *)
      echo "usage: $0 [--browser] [--postgres]" >&2
      exit 2
      ;;
  esac
done
((${#want[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian packages: ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
else
  echo "notiflow needs: ${want[*]}." >&2
  echo "Install them with your package manager, e.g. 'sudo apt-get install ${want[*]}'." >&2
  if [[ " ${want[*]} " == *" redis-server "* ]]; then
    echo "Instead of redis-server, you may point REDIS_URL at a Redis server you already run." >&2
  fi
  exit 1
fi
