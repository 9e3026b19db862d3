#!/usr/bin/env bash
# Make sure the system packages notiflow needs are present: python3-venv and redis-server
# (and chromium with --browser). Uses what is on PATH; otherwise installs Debian's packages
# when running as root with apt-get; otherwise says what to do and fails.
set -euo pipefail

want=()
python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
command -v redis-server >/dev/null 2>&1 || want+=(redis-server)
if [[ "${1:-}" == "--browser" ]]; then
  command -v chromium >/dev/null 2>&1 || want+=(chromium)
fi
((${#want[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian packages: ${want[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
else
  echo "notiflow needs: ${want[*]}." >&2
  echo "Install them with your package manager, e.g. 'sudo apt-get install ${want[*]}'," >&2
  echo "or point REDIS_URL at a Redis server you already run." >&2
  exit 1
fi
