"""K-class conditioning end to end: tiny VAE + LDM on a 4-class folder, then sampling by class
name, id and 'all' through the entry points (train.py, sample.py). The report of a K-class run
is checked in test_report.py; reading, naming, splitting and batching 2 to 4 classes (aliases
such as 'healthy' included) in test_data_kclass.py, which needs no training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# Class folders as on disk; the run's classes are normal first, then sorted.
FOLDERS = ("glioma", "meningioma", "notumor", "pituitary")
CLASSES = ["normal", "glioma", "meningioma", "pituitary"]


def _folder(root: Path, dirs: tuple[str, ...], n: int = 6) -> Path:
    """`n` small PNGs per class; each class has its own bright blob position."""
    rng = np.random.default_rng(len(dirs))
    yy, xx = np.mgrid[0:40, 0:40]
    for c, d in enumerate(dirs):
        (root / d).mkdir(parents=True)
        cy, cx = 10 + 20 * (c // 2), 10 + 20 * (c % 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)
        for i in range(n):
            img = 0.6 * blob + 0.4 * rng.random((40, 40))
            Image.fromarray((img * 255).astype(np.uint8)).save(root / d / f"{i}.png")
    return root


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


def _pngs(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*.png")) if d.is_dir() else []


@pytest.mark.slow
def test_train_and_sample_k_classes(tmp_path):
    k = len(CLASSES)
    data = _folder(tmp_path / "data", FOLDERS)
    vae, ldm = tmp_path / "vae", tmp_path / "ldm"
    r = _run(
        "train.py",
        "--config=configs/vae.py:tiny",
        f"--config.data.path={data}",
        "--config.data.classes=folders",
        f"--config.data.cache_dir={tmp_path / 'cache'}",
        "--config.train.num_steps=4",
        "--config.train.progress_bar=False",
        f"--workdir={vae}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(
        "train.py",
        "--config=configs/ldm.py:tiny",
        f"--config.vae_workdir={vae}",
        "--config.train.num_steps=4",
        "--config.train.progress_bar=False",
        f"--workdir={ldm}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    split = json.loads((ldm / "split.json").read_text())
    assert split["class_names"] == CLASSES  # the order is recorded in the run
    for counts in split["counts"].values():
        assert min(counts.values()) >= 1  # every split holds every class

    name = CLASSES[-1]
    out = tmp_path / "by_name"
    r = _run("sample.py", f"--workdir={ldm}", f"--label={name}", "--num_samples=4", f"--out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(_pngs(out / name)) == 4
    assert [d.name for d in out.iterdir() if d.is_dir()] == [name]

    out = tmp_path / "all"
    r = _run(
        "sample.py", f"--workdir={ldm}", "--label=all", f"--num_samples={2 * k}", f"--out={out}"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for cname in CLASSES:
        assert len(_pngs(out / cname)) == 2, cname

    out = tmp_path / "by_id"
    r = _run("sample.py", f"--workdir={ldm}", "--label=2", "--num_samples=2", f"--out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(_pngs(out / "meningioma")) == 2

    out = tmp_path / "bad"
    r = _run("sample.py", f"--workdir={ldm}", "--label=astrocytoma", f"--out={out}")
    assert r.returncode == 2
    assert "astrocytoma" in r.stderr and all(c in r.stderr for c in CLASSES)
    assert "Traceback" not in r.stderr and not _pngs(out)
