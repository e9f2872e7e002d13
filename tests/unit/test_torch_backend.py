"""``score.backend=torch`` outside Spark: a model built with ``build_model``, exported with
the project's exporter and saved in its torch form by compress's ``save_torch_form``,
loaded through ``load_backend`` as format "onnx" and as format "torch": the two return the
same logits on the same feeds (text and tabular models, a regression head, a pruned
model). The weights are sha256-checked, the spec rebuilds the module exactly or compress
says why not, the run directory picks one format per variant, and the config refuses a
bad ``score.backend``. Small models on CPU: a few seconds, most of it the ONNX exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _batches import text_batch

from sparkforge.artifacts import ArtifactError, sha256_file, update_manifest
from sparkforge.compress.onnx_export import export_onnx
from sparkforge.compress.prune import prune_model
from sparkforge.compress.torch_form import (
    NoTorchForm,
    save_torch_form,
    torch_entries,
    torch_files,
)
from sparkforge.config import ConfigError, ScoreConfig, load_config
from sparkforge.infer import predictor as P
from sparkforge.infer.runs import variant_model
from sparkforge.models import build_model, input_names

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 500
SPECS = {
    "embedding_bag": {"name": "embedding_bag", "num_outputs": 3, "vocab_size": VOCAB,
                      "embed_dim": 16, "hidden_dim": 12, "bigram_buckets": 64},
    "mlp": {"name": "mlp", "num_outputs": 4, "input_dim": 10, "hidden_dim": 16},
    # regression: the target's scale is applied inside the module (and the graph)
    "mlp_regression": {"name": "mlp", "num_outputs": 1, "input_dim": 10, "hidden_dim": 16,
                       "target_mean": 50.0, "target_std": 12.0},
}


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """The torch backend sets torch's intra-op threads (as on an executor); put them back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _feeds(spec: dict[str, Any], rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    if input_names(spec) == ["features"]:
        return {"features": rng.normal(size=(rows, spec["input_dim"])).astype(np.float32)}
    return text_batch(rng, rows, 14, VOCAB)


def _trained_like(spec: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """A model with weights far from its initialisation (padding row included), so that a
    backend that rebuilt but did not load the weights gives other logits."""
    torch.manual_seed(seed)
    model = build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model.eval()


def _both(model: torch.nn.Module, spec: dict[str, Any], folder: Path,
          example: dict[str, np.ndarray]) -> tuple[P.Backend, P.Backend]:
    """(the ONNX backend, the torch backend) of ``model``, both through ``load_backend``."""
    onnx_path = folder / "model.onnx"
    export_onnx(model, spec, onnx_path, example)
    files = save_torch_form(model, spec, folder)
    onnx = P.load_backend(P.ModelRef(str(onnx_path), sha256_file(onnx_path), 1, "onnx"))
    tref = P.ModelRef(str(files["weights"]), sha256_file(files["weights"]), 1, "torch",
                      spec=files["spec"].read_text())
    return onnx, P.load_backend(tref)


def _assert_same_logits(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype == np.float32
    assert a.shape == b.shape
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-5)
    if a.shape[1] > 1:
        np.testing.assert_array_equal(b.argmax(axis=1), a.argmax(axis=1))


@pytest.mark.parametrize("name", list(SPECS))
def test_torch_and_onnx_backends_return_the_same_logits(tmp_path: Path, name: str) -> None:
    spec = SPECS[name]
    rng = np.random.default_rng(7)
    onnx, torch_backend = _both(_trained_like(spec), spec, tmp_path, _feeds(spec, rng, 4))
    assert isinstance(onnx, P.OnnxBackend)
    assert isinstance(torch_backend, P.TorchBackend)
    assert json.loads((tmp_path / "model.json").read_text()) == spec
    feeds = _feeds(spec, rng, 37)
    # Through the scoring core: sub-batches of 8 rows, each trimmed to its longest row.
    got = {b: P.Predictor(backend, list(feeds), batch_size=8).predict_feeds(feeds)
           for b, backend in (("onnx", onnx), ("torch", torch_backend))}
    assert got["onnx"].shape == (37, spec["num_outputs"])
    _assert_same_logits(got["onnx"], got["torch"])
    # on CPU the forward runs with the ref's thread count (1: one per Spark task slot)
    assert torch.get_num_threads() == 1


def test_a_pruned_mlp_is_saved_with_its_narrower_spec(tmp_path: Path) -> None:
    spec = SPECS["mlp"]
    model = _trained_like(spec, seed=1)
    prune_model(model, spec, 0.5)
    rng = np.random.default_rng(3)
    onnx, torch_backend = _both(model, spec, tmp_path, _feeds(spec, rng, 4))
    assert json.loads((tmp_path / "model.json").read_text()) == {**spec, "hidden_dim": 8}
    feeds = _feeds(spec, rng, 20)
    _assert_same_logits(onnx.run(feeds), torch_backend.run(feeds))


def test_a_vocabulary_pruned_text_model_has_no_torch_form(tmp_path: Path) -> None:
    """Its remapped embedding is no model spec's: nothing is saved (and what an earlier
    run left is removed), with the reason, and the variant scores on onnxruntime."""
    spec = SPECS["embedding_bag"]
    model = _trained_like(spec)
    (tmp_path / "model.safetensors").write_bytes(b"left by an earlier run")
    prune_model(model, spec, 0.5, kept_token_ids=range(1, 100), unk_id=1)
    with pytest.raises(NoTorchForm, match=r"embed\.(table\.weight|token_map|weight)"):
        save_torch_form(model, spec, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "model.json").exists()


def test_a_changed_weights_file_is_refused(tmp_path: Path) -> None:
    spec = SPECS["mlp"]
    files = save_torch_form(_trained_like(spec), spec, tmp_path)
    sha = sha256_file(files["weights"])
    save_torch_form(_trained_like(spec, seed=5), spec, tmp_path)  # same shapes, new values
    ref = P.ModelRef(str(files["weights"]), sha, 1, "torch", spec=files["spec"].read_text())
    with pytest.raises(RuntimeError, match="changed after it was selected"):
        P.load_backend(ref)


def test_a_spec_that_does_not_fit_the_weights_is_refused(tmp_path: Path) -> None:
    """Strict loading: weights of another shape never load into the spec's module."""
    spec = SPECS["mlp"]
    files = save_torch_form(_trained_like(spec), spec, tmp_path)
    ref = P.ModelRef(str(files["weights"]), sha256_file(files["weights"]), 1, "torch",
                     spec=json.dumps({**spec, "hidden_dim": 32}))
    with pytest.raises(RuntimeError, match=r"size mismatch"):
        P.load_backend(ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_torch_runs_bf16_and_returns_float32(tmp_path: Path) -> None:
    spec = SPECS["embedding_bag"]
    rng = np.random.default_rng(11)
    onnx, torch_backend = _both(_trained_like(spec), spec, tmp_path, _feeds(spec, rng, 4))
    assert isinstance(torch_backend, P.TorchBackend)
    assert torch_backend.device.type == "cuda"
    feeds = _feeds(spec, rng, 64)
    a, b = onnx.run(feeds), torch_backend.run(feeds)
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, a, atol=0.1)  # bf16 keeps about 3 significant digits


# ---------------------------------------------------------------------------
# The one place the format is picked: the run directory's variants


def _run_dir(out: Path) -> dict[str, Any]:
    """A run directory with an fp32 variant (ONNX + torch form) and an int8 one (ONNX)."""
    spec = SPECS["mlp"]
    model = _trained_like(spec)
    paths = {v: out / "compressed" / v / "model.onnx" for v in ("fp32", "int8_dynamic")}
    for p in paths.values():
        export_onnx(model, spec, p, {"features": np.ones((2, 10), np.float32)})
    saved: dict[str, dict[str, Path] | str] = {
        "fp32": save_torch_form(model, spec, paths["fp32"].parent)}
    entries = torch_entries(out, paths, saved)
    selection = {"selected": "fp32", "torch": entries,
                 "paths": {v: str(p.relative_to(out)) for v, p in paths.items()}}
    update_manifest(out, "compress", selection, [*paths.values(), *torch_files(out, entries)])
    return selection


def test_each_variant_gets_one_format_and_the_reason(tmp_path: Path) -> None:
    selection = _run_dir(tmp_path)
    assert selection["torch"]["int8_dynamic"] == {
        "reason": "an int8 graph quantized by ONNX Runtime, not a torch module"}
    sha = {v: sha256_file(tmp_path / rel) for v, rel in selection["paths"].items()}
    on_torch = {v: variant_model(tmp_path, selection, v, sha[v], "torch") for v in sha}
    assert on_torch["fp32"].format == "torch"
    assert on_torch["fp32"].path == tmp_path / "compressed/fp32/model.safetensors"
    assert on_torch["fp32"].sha256 == sha256_file(on_torch["fp32"].path)
    assert json.loads(on_torch["fp32"].spec) == SPECS["mlp"]
    assert (on_torch["int8_dynamic"].format, on_torch["int8_dynamic"].backend) == (
        "onnx", "onnxruntime")
    assert "int8" in on_torch["int8_dynamic"].why
    on_ort = {v: variant_model(tmp_path, selection, v, sha[v], "onnxruntime") for v in sha}
    assert {m.format for m in on_ort.values()} == {"onnx"}
    assert on_ort["fp32"].path == tmp_path / selection["paths"]["fp32"]
    # a run compressed before torch forms existed: its ONNX files, and the fix
    old = {k: v for k, v in selection.items() if k != "torch"}
    legacy = variant_model(tmp_path, old, "fp32", sha["fp32"], "torch")
    assert legacy.format == "onnx"
    assert "rerun compress" in legacy.why


def test_a_changed_torch_file_is_refused_before_scoring(tmp_path: Path) -> None:
    selection = _run_dir(tmp_path)
    spec = tmp_path / "compressed/fp32/model.json"
    spec.write_text(json.dumps({**SPECS["mlp"], "hidden_dim": 32}))
    with pytest.raises(ArtifactError, match=r"model\.json.*rerun compress"):
        variant_model(tmp_path, selection, "fp32", "unused", "torch")
    # onnxruntime does not read the torch form
    assert variant_model(tmp_path, selection, "fp32", "sha", "onnxruntime").format == "onnx"


def test_torch_entries_name_why_a_variant_has_no_torch_form(tmp_path: Path) -> None:
    names = ["fp32", "int8_static", "fp16", "pruned", "baseline"]
    entries = torch_entries(tmp_path, {n: tmp_path / n for n in names},
                            {"fp32": {"weights": tmp_path / "w", "spec": tmp_path / "s"},
                             "pruned": "its minilm architecture is not one a model spec builds"})
    assert entries["fp32"] == {"weights": "w", "spec": "s"}
    assert "int8" in entries["int8_static"]["reason"]
    assert "fp16" in entries["fp16"]["reason"]
    assert "minilm" in entries["pruned"]["reason"]
    assert "scikit-learn" in entries["baseline"]["reason"]
    assert torch_files(tmp_path, entries) == [tmp_path / "w", tmp_path / "s"]


# ---------------------------------------------------------------------------
# Config


def test_score_backend_defaults_to_onnxruntime_and_takes_torch() -> None:
    assert load_config(ROOT / "conf" / "tabular_classification.yaml").score.backend \
        == "onnxruntime"
    cfg = load_config(ROOT / "conf" / "tabular_classification.yaml", ["score.backend=torch"])
    assert cfg.score.backend == "torch"


@pytest.mark.parametrize(("overrides", "needles"), [
    (["score.backend=tensorrt"], ["score.backend='tensorrt'", "onnxruntime, torch"]),
    (["score.backend=torch", "score.mode=embed"],
     ["score.backend='torch'", "score.mode=embed", "score.backend=onnxruntime"]),
])
def test_a_bad_score_backend_is_refused_at_load(overrides: list[str],
                                                needles: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "conf" / "text_classification.yaml", overrides)
    for needle in needles:
        assert needle in str(e.value)


def test_a_bad_score_backend_is_refused_when_built_in_code() -> None:
    with pytest.raises(ConfigError, match=r"score\.backend='onnx': use one of onnxruntime"):
        ScoreConfig(backend="onnx")  # type: ignore[arg-type]
