#!/bin/sh
# The image's virtual environment: torch first, pinned, from the index that has the
# build the variant needs, then every other dependency as pyproject.toml lists it, at the
# versions requirements.lock pins.
#   cpu: torch's CPU build (the package index's default Linux wheel is the CUDA one and
#        would pull ~3 GB of CUDA libraries into an image that cannot use them);
#   gpu: the package index's torch (CUDA 13.0) and the `gpu` extra (faiss-gpu).
# Usage: install-python-deps.sh VARIANT TORCH_VERSION TORCH_CPU_INDEX
set -eu
variant="$1"
torch_version="$2"
torch_cpu_index="$3"
python3 -m venv /opt/venv
pip="/opt/venv/bin/pip install --no-cache-dir"
$pip --upgrade pip -c requirements.lock
case "$variant" in
    cpu)
        $pip "torch==${torch_version}" --index-url "$torch_cpu_index"
        extras=""
        ;;
    gpu)
        $pip "torch==${torch_version}"
        extras="gpu"
        ;;
    *)
        echo "VARIANT must be cpu or gpu, not '$variant'" >&2
        exit 2
        ;;
esac
/opt/venv/bin/python requirements.py pyproject.toml $extras > requirements.txt
# The versions requirements.lock pins (what `make test` tested and `make audit` audited);
# what the lock does not name (the gpu extra, torch's CUDA libraries) as the ranges allow.
$pip -r requirements.txt -c requirements.lock
# faiss-cpu comes with the base dependencies; the GPU build replaces it (both install
# the same `faiss` package, and the one installed last would win file by file).
if [ "$variant" = gpu ]; then
    /opt/venv/bin/pip uninstall -y faiss-cpu
    $pip --force-reinstall --no-deps "$(grep -i '^faiss-gpu' requirements.txt)"
fi
/opt/venv/bin/python -c "import torch, faiss; print('torch', torch.__version__, 'faiss', faiss.__version__)"
