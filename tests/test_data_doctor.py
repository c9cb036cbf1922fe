"""The data doctor CLI: summary with a JSON last line, exit code 2 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jax_mri_ldm.data.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in (("no", 2), ("yes", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray((rng.random((24, 30)) * 255).astype(np.uint8)).save(
                root / cls / f"{cls} {i}.png"
            )
    (root / "yes" / "dup.png").write_bytes((root / "yes" / "yes 0.png").read_bytes())
    (root / "yes" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "jax_mri_ldm.data", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_doctor_subprocess_summary_and_missing_dir(tmp_path):
    root = _folder(tmp_path / "data")
    r = _run(f"--path={root}", "--image_size=32", f"--cache_dir={tmp_path / 'c'}")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["num_images"] == 6
    assert summary["classes"] == {"normal": 2, "tumour": 4}
    assert summary["skipped"] == 1 and summary["skipped_files"][0][0] == "yes/broken.jpg"
    assert summary["duplicate_groups"] == 1 and summary["unique_images"] == 5
    assert summary["modes"] == {"no": {"L": 2}, "yes": {"L": 4}}
    assert "yes/broken.jpg" in r.stderr  # the skip is also warned about

    r = _run(f"--path={tmp_path / 'missing'}")
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0  # one message


def test_doctor_bad_inputs_exit_2(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "scans").mkdir(parents=True)
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20)).save(root / "scans" / "a.png")
    assert main([f"--path={root}", "--image_size=32", "--no_cache"]) == 2
    err = capsys.readouterr().err
    assert "'scans'" in err and "--config.data.class_map" in err

    (root / "no").mkdir()
    assert main([f"--path={root}", "--class_map=scans=1", "--no_cache"]) == 2
    assert "no image files" in capsys.readouterr().err

    assert main(["--builtin", f"--path={root}"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_doctor_builtin_in_process(tmp_path, capsys):
    args = ["--builtin", "--num_normal=2", "--num_tumour=2", "--image_size=32"]
    assert main([*args, f"--cache_dir={tmp_path}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["num_images"] == 4 and summary["source"] == "builtin"
    assert summary["classes"] == {"normal": 2, "tumour": 2} and summary["skipped"] == 0


def _smooth(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    coarse = rng.normal(size=(6, 6)).astype(np.float32)
    img = np.asarray(Image.fromarray(coarse, "F").resize(size, Image.BICUBIC))
    return Image.fromarray(((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8))


def test_doctor_reports_near_duplicate_groups(tmp_path, capsys):
    rng = np.random.default_rng(3)
    root = tmp_path / "data"
    for cls, n in (("no", 4), ("yes", 4)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            _smooth(rng, (40, 40)).save(root / cls / f"{cls}{i}.png")
    same = Image.open(root / "yes" / "yes0.png")
    same.resize((64, 64), Image.BILINEAR).save(root / "yes" / "yes0_big.png")  # re-saved larger
    Image.open(root / "no" / "no1.png").save(root / "yes" / "no1_as_yes.jpg", quality=95)
    args = [f"--path={root}", "--image_size=32", "--no_cache"]
    assert main(args) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["duplicate_groups"] == 0 and summary["unique_images"] == 10
    assert summary["near_duplicate_groups"] == 2 and summary["near_duplicate_files"] == 4
    assert summary["near_duplicate_classes"] == {"normal+tumour": 1, "tumour": 1}
    assert summary["near_duplicate_mixed_labels"] == 1 and summary["distinct_images"] == 8
    assert "yes/yes0.png ~ yes/yes0_big.png" in out
    assert "WARNING: near-identical files with different labels: no/no1.png" in out

    assert main([*args, "--near_duplicate_threshold=0"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["near_duplicate_groups"] == 0 and summary["distinct_images"] == 10
