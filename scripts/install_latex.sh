#!/usr/bin/env bash
# pdflatex for `make test-latex` and scripts/report_page.py: Debian's texlive-latex-recommended (booktabs, amsmath,
# ...) and poppler-utils (pdftoppm). Installs only what is missing; needs root (apt-get).
set -euo pipefail
missing=()
command -v pdflatex >/dev/null || missing+=(texlive-latex-recommended)
command -v pdftoppm >/dev/null || missing+=(poppler-utils)
if [ ${#missing[@]} -eq 0 ]; then
    echo "pdflatex and pdftoppm are installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing ${missing[*]} needs root: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
