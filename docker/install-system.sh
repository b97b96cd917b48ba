#!/bin/sh
# System packages of the image, from the base's own distribution (Debian on the CPU
# variant, Ubuntu under NVIDIA's CUDA base): ffmpeg for every decode, espeak-ng for the
# demo corpus's narration, and Python where the base has none (the CUDA base).
set -eu
packages="ffmpeg espeak-ng ca-certificates"
if ! command -v python3 >/dev/null 2>&1; then
    packages="$packages python3 python3-venv"
fi
apt-get update
# shellcheck disable=SC2086 # the list is split on purpose
apt-get install -y --no-install-recommends $packages
rm -rf /var/lib/apt/lists/*
python3 -c 'import sys; assert sys.version_info >= (3, 11), "mmv-search needs Python 3.11 or newer"'
