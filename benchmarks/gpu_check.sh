#!/usr/bin/env bash
# The GPU check of issue 13: nnseg and nnU-Net v2 trained (AMP) and predicting (TTA) at the same plan on CUDA,
# plus nnseg under torchrun with NCCL. Under 10 minutes on one H200. See benchmarks/gpu_check.py for what is measured.
#
# Here, with the package registry, once (wheels for Python 3.12 into .whl/, about 19 MB, ignored by git):
#     benchmarks/gpu_check.sh --prepare
# On the device machine (the device tool; the machine has python3 3.12 with torch, no network):
#     run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# The table lands in $OUT/gpu_check.md. SimpleITK (52 MB) does not fit the transfer: nnseg reads NIfTI with
# nibabel and imports SimpleITK only for other formats; nnU-Net gets an empty stand-in module to import and
# reads NIfTI through its NibabelIO (dataset.json's overwrite_image_reader_writer).
set -euo pipefail
cd "$(dirname "$0")/.."

BINARY=(nnunetv2==2.8.1 dynamic-network-architectures==0.4.4 batchgeneratorsv2==0.3.6 monai==1.6.1 nibabel==5.4.2
        connected-components-3d==4.1.1 blosc2==4.14.1 ndindex==1.10.1 numexpr==2.14.2 fft-conv-pytorch==1.2.0
        dicom2nifti==2.6.2 pydicom==3.0.2 graphviz==0.21 yacs==0.1.8)
SOURCE_ONLY=(acvl-utils==0.2.6 batchgenerators==0.25.5)

if [[ "${1:-}" == "--prepare" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${BINARY[@]}"
    python3 -m pip wheel -q --no-deps -w .whl "${SOURCE_ONLY[@]}"  # pure Python, published as sdists only
    du -sh .whl
    exit 0
fi

out="${OUT:-/tmp/nnseg_gpu_check}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
mkdir -p /tmp/stand-in
echo '"""Empty stand-in: nnU-Net imports SimpleITK at module level; the GPU check reads NIfTI via NibabelIO."""' \
    > /tmp/stand-in/SimpleITK.py
python3 -c 'import SimpleITK' 2>/dev/null && stand_in="" || stand_in=":/tmp/stand-in"
export PYTHONPATH="/tmp/site:$PWD${stand_in}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 benchmarks/gpu_check.py --out "$out/run" 2>&1 | tee "$out/gpu_check.log"
cp "$out/run/gpu_check.md" "$out/run/gpu_check.json" "$out/"
rm -rf "$out/run"  # datasets and models stay on the machine's disk, not in what comes back
