"""xdd.core.fmt: the text the CLI and the pages show (stage names, run names, markdown tables)."""
from __future__ import annotations

import numpy as np

from xdd.core.fmt import PROJ_LABELS, config_group, describe_config, md_table, stage_label, \
    thread_count, thread_counts, threads_note


def test_stage_labels():
    assert stage_label(None) == "Waiting" and stage_label("") == "Waiting"
    assert stage_label("retrain:xdd") == "Retraining (XDD)"
    assert stage_label("retrain:mcdd") == "Retraining (MCDD only)"
    assert stage_label("retrain:new") == "Retraining (new)"  # an unknown method: its name
    assert stage_label("project:tsne") == "Projecting to 2-D (t-SNE)"
    assert stage_label("project:foo") == "Projecting to 2-D (foo)"
    assert stage_label("pretrain") == "GAN pretraining"
    assert stage_label("starting") == "Starting (loading PyTorch)"
    assert stage_label("mystery:x") == "mystery:x"
    assert PROJ_LABELS == {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


def test_describe_config():
    c = {"ood_digit": 3, "shots": 10, "seed": 1, "preset": "quick"}
    assert describe_config(c) == "digit 3 · 10 shots · seed 1 · quick"
    assert describe_config({}) == "digit ? · ? shots · seed ? · ?"


def test_config_group_names_custom_runs():
    assert config_group({"preset": "quick", "variant": []}) == "quick"
    # the preset in its config wins over the top-level field
    assert config_group({"config": {"preset": "paper"}, "preset": "quick", "variant": []}) \
        == "paper"
    assert (config_group({"preset": "quick", "variant": ["a=1", "b=2"]})
            == "quick · custom (a=1, b=2)")
    assert (config_group({"preset": "tiny", "variant": ["a=1", "b=2", "c=3", "d=4", "e=5"]})
            == "tiny · custom (a=1, b=2, c=3, +2 more)")
    # a legacy run (no recorded variant) of a preset that no longer exists
    assert config_group({"config": {"preset": "nosuch"}}) == "nosuch · custom (preset='nosuch')"


def test_md_table():
    rows = [{"m": "XDD", "auprc": 0.81234, "n": 3},
            {"m": "a|b\nc", "auprc": float("nan"), "n": None},
            {"m": "pixels", "auprc": np.float64(0.5), "n": "x"}]
    cols = [("m", "method", ""), ("auprc", "AUPRC", ".3f"), ("n", "runs", "d")]
    assert md_table(rows, cols).splitlines() == [
        "| method | AUPRC | runs |",
        "| :--- | ---: | ---: |",
        "| XDD | 0.812 | 3 |",
        "| a\\|b c | – | – |",
        "| pixels | 0.500 | x |",  # a format that does not fit: the value as it is
    ]
    assert md_table([], [("m", "method", "")]) == "| method |\n| :--- |"


def test_thread_counts_as_runs_recorded_them():
    assert thread_count("cpu (1 thread)") == "1" and thread_count("cpu (12 threads)") == "12"
    assert thread_count("cuda (NVIDIA H100 80GB HBM3)") == "GPU"
    assert thread_count(None) == "?" and thread_count("cpu") == "?"
    # distinct, numerically (10 after 2), a GPU and unknown runs last
    assert thread_counts(["cpu (10 threads)", "cpu (2 threads)", "cpu (2 threads)",
                          "cuda (x)", None, "cpu (1 thread)"]) == "1, 2, 10, ?, GPU"
    assert thread_counts(["cpu (4 threads)"]) == "4"
    assert threads_note("cpu (1 thread)") == "1 thread"
    assert threads_note("cpu (4 threads)") == "4 threads"
    assert threads_note("cuda (x)") == "GPU" and threads_note(None) == "threads not recorded"
