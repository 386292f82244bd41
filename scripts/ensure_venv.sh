#!/usr/bin/env bash
# Creates VENV with Python VERSION when it is missing (or has the wrong Python).
set -euo pipefail
venv=$1 version=$2
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))"; then
  exit 0
fi
candidates=("python$version")
if command -v pyenv >/dev/null 2>&1; then
  while read -r v; do candidates+=("$(pyenv root)/versions/$v/bin/python"); done < <(pyenv versions --bare 2>/dev/null | grep "^$version\." || true)
fi
for dir in "$HOME"/.pyenv/versions/"$version".*; do candidates+=("$dir/bin/python"); done
for py in "${candidates[@]}"; do
  if command -v "$py" >/dev/null 2>&1 && "$py" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" 2>/dev/null; then
    rm -rf "$venv"
    "$py" -m venv "$venv"
    exit 0
  fi
done
cat >&2 <<MSG
error: tfdarts needs Python $version (ml-pipelines-sdk 1.17 supports Python < 3.11) and none was found.
Install one, then run make again, for example:
  pyenv install $version && pyenv local $version      # with pyenv
  sudo apt-get install python$version python$version-venv  # Debian/Ubuntu (deadsnakes PPA on Ubuntu)
MSG
exit 1
