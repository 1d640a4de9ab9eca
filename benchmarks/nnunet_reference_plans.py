#!/usr/bin/env python
"""Reference plans from the installed nnU-Net v2 (tested with nnunetv2==2.8.1).

Runs nnU-Net's own fingerprint extraction + experiment planning (no preprocessing) on an
nnU-Net-layout dataset folder (imagesTr/, labelsTr/, dataset.json) inside a scratch directory and
writes a compact, normalised JSON summary that our re-implementation (nnseg) can be compared against.

Usage:
    /work/nnunet_venv/bin/python nnunet_reference_plans.py DATASET_DIR OUT_JSON \
        [--scratch DIR] [--np N] [--planner ExperimentPlanner] [--gpu-memory GB] [--id NNN] [--keep]

Notes
 * nnU-Net reads nnUNet_raw / nnUNet_preprocessed / nnUNet_results at import time, so we set them
   before importing nnunetv2.
 * The dataset is symlinked into <scratch>/nnUNet_raw/DatasetNNN_Name. If DATASET_DIR is already
   named DatasetNNN_Name that id/name is used, otherwise id 999 (or --id) and the folder name.
 * All nnU-Net console output goes to stderr; stdout gets only the JSON summary.
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile


def _parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_dir")
    p.add_argument("out_json")
    p.add_argument("--scratch", default=None, help="scratch dir (default: a fresh temp dir, deleted unless --keep)")
    p.add_argument("--np", type=int, default=1, help="processes for fingerprint extraction (default 1)")
    p.add_argument("--planner", default="ExperimentPlanner", help="nnU-Net planner class name")
    p.add_argument("--gpu-memory", type=float, default=None, help="gpu_memory_target_in_gb (default: planner default)")
    p.add_argument("--id", type=int, default=None, help="dataset id to use if folder is not DatasetNNN_Name")
    p.add_argument("--keep", action="store_true", help="keep the temp scratch dir")
    return p.parse_args(argv)


def _dataset_name(dataset_dir, forced_id):
    base = os.path.basename(os.path.normpath(dataset_dir))
    m = re.fullmatch(r"Dataset(\d{3})_(.+)", base)
    if m and forced_id is None:
        return int(m.group(1)), base
    did = 999 if forced_id is None else forced_id
    name = m.group(2) if m else re.sub(r"[^A-Za-z0-9]+", "", base) or "Data"
    return did, f"Dataset{did:03d}_{name}"


def _lst(x):
    """tuples/np arrays -> nested lists of python scalars"""
    if isinstance(x, (list, tuple)):
        return [_lst(i) for i in x]
    try:
        import numpy as np

        if isinstance(x, np.ndarray):
            return _lst(x.tolist())
        if isinstance(x, np.generic):
            return x.item()
    except ImportError:
        pass
    return x


def _summarise(plans, fingerprint):
    out = {
        "nnunetv2_version": None,
        "experiment_planner_used": plans.get("experiment_planner_used"),
        "image_reader_writer": plans.get("image_reader_writer"),
        "transpose_forward": plans["transpose_forward"],
        "transpose_backward": plans["transpose_backward"],
        "original_median_spacing_after_transp": plans["original_median_spacing_after_transp"],
        "original_median_shape_after_transp": plans["original_median_shape_after_transp"],
        "configurations": {},
        "fingerprint": {
            "spacings": _lst(fingerprint["spacings"]),
            "shapes_after_crop": _lst(fingerprint["shapes_after_crop"]),
            "median_relative_size_after_cropping": _lst(fingerprint["median_relative_size_after_cropping"]),
            "foreground_intensity_properties_per_channel": fingerprint["foreground_intensity_properties_per_channel"],
        },
    }
    for cname, c in plans["configurations"].items():
        if "architecture" not in c:  # e.g. 3d_cascade_fullres only has inherits_from/previous_stage
            out["configurations"][cname] = dict(c)
            continue
        ak = c["architecture"]["arch_kwargs"]
        out["configurations"][cname] = {
            "spacing": c["spacing"],
            "transpose_forward": plans["transpose_forward"],
            "patch_size": c["patch_size"],
            "median_image_size_in_voxels": c["median_image_size_in_voxels"],
            "batch_size": c["batch_size"],
            "batch_dice": c.get("batch_dice"),
            "n_stages": ak["n_stages"],
            "pool_op_kernel_sizes": ak["strides"],
            "conv_kernel_sizes": ak["kernel_sizes"],
            "features_per_stage": ak["features_per_stage"],
            "n_conv_per_stage": ak.get("n_conv_per_stage", ak.get("n_blocks_per_stage")),
            "n_conv_per_stage_decoder": ak["n_conv_per_stage_decoder"],
            "network_class_name": c["architecture"]["network_class_name"],
            "normalization_schemes": c["normalization_schemes"],
            "use_mask_for_norm": c["use_mask_for_norm"],
            "resampling_fn_data_kwargs": c["resampling_fn_data_kwargs"],
            "resampling_fn_seg_kwargs": c["resampling_fn_seg_kwargs"],
            "data_identifier": c["data_identifier"],
        }
        for extra in ("next_stage", "previous_stage"):
            if extra in c:
                out["configurations"][cname][extra] = c[extra]
    return out


def main(argv=None):
    args = _parse_args(argv)
    dataset_dir = os.path.abspath(args.dataset_dir)
    for req in ("dataset.json", "imagesTr", "labelsTr"):
        if not os.path.exists(os.path.join(dataset_dir, req)):
            sys.exit(f"missing {req} in {dataset_dir}")

    tmp_created = args.scratch is None
    scratch = os.path.abspath(args.scratch) if args.scratch else tempfile.mkdtemp(prefix="nnunet_ref_")
    raw, pre, res = (os.path.join(scratch, i) for i in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
    for d in (raw, pre, res):
        os.makedirs(d, exist_ok=True)
    os.environ["nnUNet_raw"] = raw
    os.environ["nnUNet_preprocessed"] = pre
    os.environ["nnUNet_results"] = res
    # avoid the hostname lookup table in get_allowed_n_proc_DA (only affects torch threads in the VRAM estimate)
    os.environ.setdefault("nnUNet_n_proc_DA", str(max(1, args.np)))
    os.environ.setdefault("nnUNet_def_n_proc", str(max(1, args.np)))

    did, dname = _dataset_name(dataset_dir, args.id)
    # make sure no other folder in raw carries the same id (nnU-Net would complain)
    for f in os.listdir(raw):
        if f.startswith(f"Dataset{did:03d}_") and f != dname:
            p = os.path.join(raw, f)
            os.unlink(p) if os.path.islink(p) else shutil.rmtree(p)
    link = os.path.join(raw, dname)
    if os.path.islink(link):
        os.unlink(link)
    if not os.path.exists(link):
        os.symlink(dataset_dir, link)
    # fresh planning output every time
    shutil.rmtree(os.path.join(pre, dname), ignore_errors=True)

    with contextlib.redirect_stdout(sys.stderr):
        import nnunetv2
        from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

        extract_fingerprints(
            [did],
            "DatasetFingerprintExtractor",
            num_processes=max(1, args.np),
            check_dataset_integrity=False,
            clean=True,
            verbose=False,
            show_progress_bar=False,
        )
        plans_identifier = plan_experiments([did], args.planner, args.gpu_memory, "DefaultPreprocessor", None, None)

    with open(os.path.join(pre, dname, "dataset_fingerprint.json")) as f:
        fingerprint = json.load(f)
    with open(os.path.join(pre, dname, plans_identifier + ".json")) as f:
        plans = json.load(f)

    summary = _summarise(plans, fingerprint)
    try:
        from importlib.metadata import version

        summary["nnunetv2_version"] = version("nnunetv2")
    except Exception:
        summary["nnunetv2_version"] = getattr(nnunetv2, "__version__", None)
    os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
    # keep nnU-Net's untouched files next to the summary: OUT.nnUNetPlans.json / OUT.dataset_fingerprint.json
    stem = args.out_json[:-5] if args.out_json.endswith(".json") else args.out_json
    shutil.copy(os.path.join(pre, dname, plans_identifier + ".json"), stem + "." + plans_identifier + ".json")
    shutil.copy(os.path.join(pre, dname, "dataset_fingerprint.json"), stem + ".dataset_fingerprint.json")
    summary["raw_files"] = [stem + "." + plans_identifier + ".json", stem + ".dataset_fingerprint.json"]

    with open(args.out_json, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))

    if tmp_created and not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
