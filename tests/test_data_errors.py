"""Bad data stops `train.py` with one clean message (exit 2) before training starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path, dirs: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for d, n in dirs.items():
        (root / d).mkdir(parents=True)
        for i in range(n):
            img = (rng.random((20, 24)) * 255).astype(np.uint8)
            Image.fromarray(img).save(root / d / f"{i}.png")
    return root


def _one_class(tmp: Path) -> Path:
    return _tree(tmp / "data", {"yes": 5})


def _looping_symlink(tmp: Path) -> Path:
    root = _tree(tmp / "data", {"no": 5, "yes": 5})
    os.symlink("loop.png", root / "yes" / "loop.png")
    return root


def _too_few(tmp: Path) -> Path:
    return _tree(tmp / "data", {"no": 2, "yes": 5})


def _nifti_2d(tmp: Path) -> Path:
    import nibabel as nib

    root = tmp / "data"
    root.mkdir()
    rows = ["path,label"]
    rng = np.random.default_rng(0)
    for label in (0, 1):
        for i in range(2):  # 2D files: one slice each, so one group per file
            name = f"v{label}{i}.nii.gz"
            vol = rng.random((40, 40)).astype(np.float32)
            nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / name))
            rows.append(f"{name},{label}")
    (root / "v.csv").write_text("\n".join(rows) + "\n")
    return root / "v.csv"


CASES = {
    "one_class": (_one_class, r"only one class found \(yes/ -> tumour\)"),
    "looping_symlink": (_looping_symlink, r"loop\.png: cannot read this file"),
    "too_few": (_too_few, r"class 'normal' has 2 distinct image\(s\).*at least 3 distinct"),
    "nifti_2d": (_nifti_2d, r"class 'normal' has 2 distinct image\(s\).*val/test"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_py_exits_2_on_bad_data(tmp_path, case):
    make, pattern = CASES[case]
    path = make(tmp_path)
    workdir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--config=configs/vae.py:tiny",
            f"--config.data.path={path}",
            f"--config.data.cache_dir={tmp_path / 'cache'}",
            f"--workdir={workdir}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert re.search(pattern, r.stderr), r.stderr[-2000:]
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()
