"""Integrity between stages: every file written through semmech.io carries its sha256, every
reader checks it and names the file, signatures are checked against their completeness sums,
the manifest records the stored hashes, and `semmech verify` leaves nothing unchecked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_run import write_signatures

from semmech import io
from semmech.cli import main as cli
from semmech.manifest import ManifestError, build_manifest, verify, write_manifest
from semmech.stages.inputs import read_prompt_views, read_signatures

A = np.arange(12, dtype=np.float32).reshape(3, 4) / 7 - 0.5


def _write_all(d: Path) -> dict[str, Path]:
    """One file of every format, written as the stages write them."""
    files = {
        "parquet": d / "t.parquet",
        "json": d / "r.json",
        "npz": d / "e.npz",
        "safetensors": d / "w.safetensors",
        "signatures": d / "attribution" / "p.safetensors",
        "csv": d / "tables" / "c.csv",
    }
    io.write_parquet(
        pd.DataFrame({"sample_idx": [0, 1, 2], "weight": [0.5, 0.3, 0.2]}), files["parquet"]
    )
    io.write_json({"a": 1}, files["json"])
    io.write_npz(files["npz"], embeddings=np.eye(3, dtype=np.float32))
    io.write_safetensors({"x": np.ones(4, np.float32)}, files["safetensors"], metadata={"k": "v"})
    write_signatures(files["signatures"], A, metadata={"basis": "test"})
    with io.atomic_path(files["csv"]) as tmp:  # as the table stages write their CSVs
        pd.DataFrame({"method": ["RD", "KM"], "value": [0.5, 0.25]}).to_csv(tmp, index=False)
    return files


def _readers(files: dict[str, Path]):
    return {
        "parquet": lambda: io.read_parquet(files["parquet"]),
        "json": lambda: io.read_json(files["json"]),
        "npz": lambda: io.read_npz(files["npz"]),
        "safetensors": lambda: io.read_safetensors(files["safetensors"]),
        "signatures": lambda: read_signatures(files["signatures"]),
        "csv": lambda: io.read_csv(files["csv"], ["method"]),
    }


def _flip(path: Path, offset: int | None = None, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= mask
    path.write_bytes(bytes(data))


def test_every_writer_records_the_hash_in_sha256sum_format(tmp_path):
    files = _write_all(tmp_path)
    for path in files.values():
        side = io.sidecar_path(path)
        assert side.read_text() == f"{io.sha256_file(path)}  {path.name}\n"
        assert io.verify_integrity(path) == io.sha256_file(path)
    # sha256sum itself accepts the records
    proc = subprocess.run(
        ["sha256sum", "-c", "t.parquet.sha256", "r.json.sha256"], cwd=tmp_path, capture_output=True
    )
    assert proc.returncode == 0, proc.stdout
    # no temporary file remains
    assert [p.name for p in tmp_path.rglob(".*")] == []
    for read in _readers(files).values():
        read()  # all intact


@pytest.mark.parametrize("fault", ["low byte", "high byte", "truncated", "appended"])
def test_every_reader_names_a_file_changed_after_it_was_written(tmp_path, fault):
    files = _write_all(tmp_path)
    for name, read in _readers(files).items():
        path = files[name]
        original = path.read_bytes()
        if fault == "low byte":
            _flip(path)
        elif fault == "high byte":
            _flip(path, offset=len(original) - 1, mask=0x40)
        elif fault == "truncated":
            path.write_bytes(original[:-3])
        else:
            path.write_bytes(original + b"\0")
        with pytest.raises(io.IntegrityError, match=f"{path}: content does not match"):
            read()
        path.write_bytes(original)
        read()


def test_a_missing_or_malformed_record_is_refused_naming_the_file(tmp_path):
    files = _write_all(tmp_path)
    for name, read in _readers(files).items():
        side = io.sidecar_path(files[name])
        record = side.read_text()
        side.unlink()
        with pytest.raises(io.IntegrityError, match=f"{files[name]}: no integrity record"):
            read()
        side.write_text("not a hash\n")
        with pytest.raises(io.IntegrityError, match="malformed"):
            read()
        side.write_text(record)
    # files from outside the workflow (user transcoders) may lack a record, and are still
    # checked when they have one
    io.sidecar_path(files["safetensors"]).unlink()
    io.read_safetensors(files["safetensors"], required_record=False)
    io.write_safetensors({"x": np.ones(4, np.float32)}, files["safetensors"])
    _flip(files["safetensors"])
    with pytest.raises(io.IntegrityError):
        io.read_safetensors(files["safetensors"], required_record=False)


def test_signatures_must_match_their_completeness_sums(tmp_path):
    files = _write_all(tmp_path)
    sig = files["signatures"]
    # rewritten through semmech.io (a valid record) but with other values: the stored sums
    # of the attribution that wrote them no longer hold
    B = A.copy()
    B[1, 2] += 0.25
    io.write_safetensors({"signatures": B}, sig, metadata={"basis": "test"})
    with pytest.raises(io.CorruptInputError, match="signature row 1 sums to .* prefix_kept"):
        read_signatures(sig)
    # fewer rows than recorded continuations
    io.write_safetensors({"signatures": A[:2]}, sig)
    with pytest.raises(io.CorruptInputError, match="2 signature rows but p.completeness.json"):
        read_signatures(sig)
    # a completeness record without per-continuation sums
    io.write_safetensors({"signatures": A}, sig)
    io.write_json({"passed": True}, sig.with_name("p.completeness.json"))
    with pytest.raises(io.CorruptInputError, match="p.completeness.json: expected 'continuations'"):
        read_signatures(sig)
    # and the prompt views (clustering, baselines, figures) read them the same way
    write_signatures(sig, A)
    io.write_npz(tmp_path / "emb.npz", embeddings=np.eye(3, dtype=np.float32))
    E, S, P = read_prompt_views("p", files["parquet"], tmp_path / "emb.npz", sig)
    assert S.shape == (3, 4) and np.allclose(S, A)
    _flip(sig, offset=len(sig.read_bytes()) - 2, mask=0x40)
    with pytest.raises(io.IntegrityError, match="p.safetensors"):
        read_prompt_views("p", files["parquet"], tmp_path / "emb.npz", sig)


def test_a_failed_write_leaves_neither_file_nor_record(tmp_path):
    target = tmp_path / "x.parquet"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    # an orphaned record (its file deleted by Snakemake) is cleaned
    io.write_json({"a": 1}, tmp_path / "d" / "a.json")
    (tmp_path / "d" / "a.json").unlink()
    assert io.remove_orphan_sidecars(tmp_path) == [tmp_path / "d" / "a.json.sha256"]
    assert list((tmp_path / "d").iterdir()) == []


# --------------------------------------------------------------------------------------------
# The manifest and `semmech verify`


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    _write_all(run / "samples")
    (run / "logs").mkdir()
    (run / "logs" / "x.log").write_text("wall-clock")
    return run


def test_manifest_records_the_hash_written_with_each_file(tmp_path):
    run = _run_dir(tmp_path)
    write_manifest(run, {}, {"run": "t", "seed": 0, "model": {"name": "m"}}, "0" * 64)
    assert cli(["verify", str(run)]) == 0
    listed = [a["path"] for a in json.loads((run / "manifest.json").read_text())["artifacts"]]
    assert "samples/t.parquet" in listed and not [p for p in listed if p.endswith(".sha256")]
    assert not [p for p in listed if p.startswith("logs/")]
    # a file corrupted mid-pipeline, after it was written and before the manifest: the
    # manifest keeps the hash recorded at write time, so verify reports the change
    target = run / "samples" / "attribution" / "p.safetensors"
    _flip(target)
    write_manifest(run, {}, {"run": "t", "seed": 0, "model": {"name": "m"}}, "0" * 64)
    assert verify(run) == ["MISMATCH samples/attribution/p.safetensors (made by rule unknown)"]
    assert cli(["verify", str(run)]) == 1
    # a stray file without a record is refused by the manifest, naming it
    (run / "stray.txt").write_text("x")
    with pytest.raises(ManifestError, match="stray.txt: no integrity record"):
        build_manifest(run, {}, {}, "")


def test_verify_reports_dot_files_records_and_paths_outside_the_run(tmp_path):
    run = _run_dir(tmp_path)
    write_manifest(run, {}, {"run": "t"}, "0" * 64)
    (run / "report").mkdir()
    (run / "report" / ".evil.html").write_text("<script>")
    (run / "samples" / ".t.parquet.abc123.parquet").write_bytes(b"left-over temporary")
    rec = io.sidecar_path(run / "samples" / "r.json")
    rec.write_text(rec.read_text().replace(rec.read_text()[:4], "0000"))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["artifacts"].append(
        {"path": "../../../../etc/hostname", "sha256": io.sha256_file("/etc/hostname"), "rule": "x"}
    )
    manifest["artifacts"].append({"path": "/etc/hostname", "sha256": "0" * 64, "rule": "x"})
    (run / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(run)
    assert "UNLISTED report/.evil.html" in problems
    assert "UNLISTED samples/.t.parquet.abc123.parquet" in problems
    assert "MISMATCH samples/r.json.sha256 (integrity record)" in problems
    assert (
        "OUTSIDE  ../../../../etc/hostname (a manifest path must stay inside " + str(run) + ")"
        in problems
    )
    assert any(p.startswith("OUTSIDE  /etc/hostname") for p in problems)
    assert len(problems) == 5
    # a symbolic link that leads out of the run directory counts as outside too
    os.symlink("/etc", run / "etc")
    manifest["artifacts"] = [{"path": "etc/hostname", "sha256": "0" * 64, "rule": "x"}]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert any(p.startswith("OUTSIDE  etc/hostname") for p in verify(run))


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "no manifest"),
        ("{not json", "not a readable JSON manifest"),
        ("{}", "no 'artifacts' list"),
        ("[]", "no 'artifacts' list"),
        ('{"artifacts": []}', "no 'artifacts' list"),
        ('{"artifacts": [{"path": "a"}]}', "artifact 0 is malformed"),
        ('{"artifacts": [{"path": "a", "sha256": "xyz"}]}', "artifact 0 is malformed"),
    ],
)
def test_verify_without_a_usable_manifest_says_so_in_one_line(tmp_path, content, message):
    run = _run_dir(tmp_path)
    if content is not None:
        (run / "manifest.json").write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "semmech.cli", "verify", str(run)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(io.__file__).parents[1])},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert cli(["verify", str(tmp_path / "no-such-run")]) == 2


# --------------------------------------------------------------------------------------------
# On the real smoke run


@pytest.mark.slow
def test_a_flipped_byte_in_signatures_stops_the_rerun_and_verify(smoke_run, tmp_path):
    """The issue's experiment: flip one byte of attribution/{prompt}.safetensors in a finished
    run and run the workflow again. The rerun of everything downstream (newer input) fails,
    naming the file, and `semmech verify` reports the change."""
    import shutil

    from conftest import run_snakemake

    wd, cfg = smoke_run
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy, symlinks=True)
    run = copy / "results" / "smoke"
    assert cli(["verify", str(run)]) == 0
    target = run / "attribution" / "java.safetensors"
    header = 8 + int.from_bytes(target.read_bytes()[:8], "little")
    _flip(target, offset=header + 4 * 101 + 3, mask=0x04)  # an exponent bit of one float32
    proc = run_snakemake(copy, "--cores", "1", "--configfile", str(cfg))
    out = proc.stdout + proc.stderr
    logs = "".join(p.read_text() for p in (run / "logs").rglob("*.log"))
    assert proc.returncode != 0, out[-3000:]
    assert "attribution/java.safetensors: content does not match the sha256" in logs + out
    assert verify(run)[:1] == ["MISMATCH attribution/java.safetensors (made by rule attribute)"]
    assert cli(["verify", str(run)]) == 1
