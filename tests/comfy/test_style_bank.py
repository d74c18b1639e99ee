"""Style bank on real ComfyUI: save/load round trips exactly, bad files and names are refused."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import folder_paths

from zstar_fixtures import _inference_mode, empty, inv, model  # noqa: F401 (pytest fixtures)

harness.load_pack()
from comfyui_zstar.zstar_attention import style_file  # noqa: E402
from comfyui_zstar.zstar_runtime import style_folders as style_bank  # noqa: E402
from comfyui_zstar.zstar_runtime.patch import patch_model  # noqa: E402
from comfyui_zstar.zstar_runtime.record import record_style  # noqa: E402
from comfyui_zstar.zstar_runtime.sampler import zstar_sample  # noqa: E402
from comfyui_zstar.zstar_runtime.style_folders import NONE, list_styles, load_style, save_style  # noqa: E402
from comfyui_zstar.nodes.style_bank import ZStarLoadStyle, ZStarSaveStyle  # noqa: E402
from comfyui_zstar.zstar_attention import ZStarError  # noqa: E402
from comfy_execution.graph_utils import ExecutionBlocker  # noqa: E402

STEPS = 6
START = 2


@pytest.fixture(autouse=True)
def output_dir(tmp_path):
    """ComfyUI's output directory pointed at a fresh folder for each test (its public setter)."""
    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path / "output"))
    yield tmp_path / "output" / style_bank.FOLDER
    folder_paths.set_output_directory(old)


@pytest.fixture(scope="module")
def record(model, empty, inv):
    with torch.inference_mode():
        return record_style(model, inv[3], empty, empty, 1.0, "auto", START, STEPS, progress=False)


@pytest.fixture(scope="module")
def patched(model):
    return patch_model(model, 1.2, 0.0, "auto", START, STEPS)


def test_saved_inversion_gives_the_identical_result(patched, empty, inv, output_dir):
    assert save_style("watercolour", inversion=inv[3]) == "watercolour.safetensors"
    assert (output_dir / "watercolour.safetensors").is_file()
    loaded, no_record = load_style("watercolour.safetensors")
    assert no_record is None
    assert all(torch.equal(a, b) for a, b in zip(loaded.trajectory, inv[3].trajectory))
    assert torch.equal(loaded.sigmas, inv[3].sigmas) and loaded.timesteps == inv[3].timesteps
    assert (loaded.arch, loaded.model_type) == (inv[3].arch, inv[3].model_type)
    original, _ = zstar_sample(patched, inv[2], inv[3], empty, empty, progress=False)
    reloaded, _ = zstar_sample(patched, inv[2], loaded, empty, empty, progress=False)
    assert torch.equal(original, reloaded)


def test_saved_record_gives_the_identical_result(patched, empty, inv, record):
    save_style("fast", record=record)
    no_inversion, loaded = load_style("fast.safetensors")
    assert no_inversion is None
    assert loaded.kv.keys() == record.kv.keys()
    assert all(torch.equal(loaded.kv[k][i], record.kv[k][i]) for k in record.kv for i in (0, 1))
    assert (loaded.layers, loaded.keys, loaded.halves, loaded.latent_shape) == \
        (record.layers, record.keys, record.halves, record.latent_shape)
    original, _ = zstar_sample(patched, inv[2], record, empty, empty, progress=False)
    reloaded, _ = zstar_sample(patched, inv[2], loaded, empty, empty, progress=False)
    assert torch.equal(original, reloaded)


def test_nulltext_embeddings_round_trip(inv):
    gen = torch.Generator().manual_seed(0)
    nulltext = dataclasses.replace(inv[2], uncond_embeddings=tuple(torch.randn(1, 77, 64, generator=gen)
                                                                   for _ in range(STEPS)), nulltext_cfg=7.5)
    save_style("content nt", inversion=nulltext)
    loaded, _ = load_style("content nt.safetensors")
    assert loaded.nulltext_cfg == 7.5
    assert all(torch.equal(a, b) for a, b in zip(loaded.uncond_embeddings, nulltext.uncond_embeddings))


def test_nodes_save_and_load_both_kinds(inv, record):
    saved = ZStarSaveStyle.execute(name="both", if_exists="stop", inversion=inv[3], record=record)
    assert saved.args == ("both.safetensors",) and "inversion + record" in saved.ui["text"][0]
    assert "both.safetensors" in ZStarLoadStyle.define_schema().inputs[0].options
    by_link = ZStarLoadStyle.execute(style=NONE, saved=saved.args[0]).args
    by_list = ZStarLoadStyle.execute(style="both.safetensors").args
    for out in (by_link, by_list):
        assert torch.equal(out[0].trajectory[0], inv[3].trajectory[0])
        assert out[1].kv.keys() == record.kv.keys()
        assert "inversion" in out[2] and "style record" in out[2]
    ZStarSaveStyle.execute(name="only_inv", if_exists="stop", inversion=inv[3])
    inversion, blocked, _ = ZStarLoadStyle.execute(style="only_inv.safetensors").args
    assert isinstance(blocked, ExecutionBlocker) and "holds no record" in blocked.message
    assert ZStarLoadStyle.validate_inputs(style="only_inv.safetensors") is True
    assert ZStarLoadStyle.validate_inputs(style=NONE) is True
    assert "not found" in ZStarLoadStyle.validate_inputs(style="gone.safetensors")
    first = ZStarLoadStyle.fingerprint_inputs(style="only_inv.safetensors")
    ZStarSaveStyle.execute(name="only_inv", if_exists="overwrite", inversion=inv[2])
    assert ZStarLoadStyle.fingerprint_inputs(style="only_inv.safetensors") != first  # a new file re-executes
    with pytest.raises(ZStarError, match="no style chosen"):
        ZStarLoadStyle.execute(style=NONE)
    with pytest.raises(ZStarError, match="connect a style inversion, a style record, or both"):
        ZStarSaveStyle.execute(name="nothing", if_exists="stop")
    for schema in (ZStarSaveStyle.define_schema(), ZStarLoadStyle.define_schema()):
        assert schema.node_id.startswith("ZStar") and schema.category == "sampling/zstar"
        assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)


def test_overwrite_is_explicit(inv):
    save_style("mine", inversion=inv[3])
    with pytest.raises(ZStarError, match="mine.safetensors already exists"):
        save_style("mine", inversion=inv[2])
    save_style("mine", inversion=inv[2], overwrite=True)
    assert torch.equal(load_style("mine.safetensors")[0].trajectory[0], inv[2].trajectory[0])


def test_a_crash_mid_write_leaves_no_file_under_the_name(inv, output_dir, monkeypatch):
    def crash(tensors, metadata, path):
        with open(path, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"partial")  # a header cut short
        raise OSError("No space left on device")

    monkeypatch.setattr(style_file, "_write_safetensors", crash)
    with pytest.raises(OSError, match="No space left"):
        save_style("new", inversion=inv[3])
    assert not (output_dir / "new.safetensors").exists()
    assert os.listdir(output_dir) == []  # and the temporary file is gone
    monkeypatch.undo()
    save_style("kept", inversion=inv[3])
    before = (output_dir / "kept.safetensors").read_bytes()
    monkeypatch.setattr(style_file, "_write_safetensors", crash)
    with pytest.raises(OSError):
        save_style("kept", inversion=inv[2], overwrite=True)
    assert (output_dir / "kept.safetensors").read_bytes() == before  # the old style survives whole
    assert os.listdir(output_dir) == ["kept.safetensors"]


@pytest.mark.parametrize("name", ["", " ", "../up", "a/b", "a\\b", ".hidden", "x*y", "semi;colon", "dots.",
                                  "x" * 101, "new\nline"])
def test_bad_save_names_are_refused(inv, name):
    with pytest.raises(ZStarError, match=r"^name: "):
        save_style(name, inversion=inv[3])
    assert ZStarSaveStyle.validate_inputs(name=name).startswith("name: ")  # shown before the prompt runs


def test_save_name_normalisation(inv):
    assert save_style("My Style v2.safetensors", inversion=inv[3]) == "My Style v2.safetensors"


@pytest.mark.parametrize("name, message", [
    ("style.ckpt", "not a .safetensors file"),
    ("style.pt", "not a .safetensors file"),
    ("../style.safetensors", "'..' is not allowed"),
    ("a/../../style.safetensors", "'..' is not allowed"),
    ("/etc/style.safetensors", "not a path"),
    ("..\\style.safetensors", "not a path"),
    ("missing.safetensors", "not found"),
])
def test_bad_load_names_are_refused(name, message):
    with pytest.raises(ZStarError, match=message):
        load_style(name)


def test_links_out_of_the_folder_are_refused(inv, output_dir, tmp_path):
    save_style("real", inversion=inv[3])
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.replace(output_dir / "real.safetensors", outside / "real.safetensors")
    (output_dir / "sneaky.safetensors").symlink_to(outside / "real.safetensors")
    (output_dir / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ZStarError, match="points outside"):
        load_style("sneaky.safetensors")
    with pytest.raises(ZStarError, match="points outside"):
        load_style("sub/real.safetensors")
    assert list_styles() == []


def test_list_shows_styles_of_both_folders(inv, output_dir, tmp_path):
    save_style("b_style", inversion=inv[3])
    (output_dir / "nested").mkdir()
    os.link(output_dir / "b_style.safetensors", output_dir / "nested" / "A style.safetensors")
    (output_dir / "notes.txt").write_text("not a style")
    (output_dir / ".b_style.safetensors.x1.tmp").write_bytes(b"")
    models_dir = tmp_path / "models_styles"
    models_dir.mkdir()
    os.link(output_dir / "b_style.safetensors", models_dir / "shared.safetensors")
    folder_paths.add_model_folder_path(style_bank.FOLDER, str(models_dir))
    try:
        assert list_styles() == ["b_style.safetensors", "nested/A style.safetensors", "shared.safetensors"]
        assert load_style("shared.safetensors")[0] is not None
        assert load_style("nested/A style.safetensors")[0] is not None
    finally:
        folder_paths.get_folder_paths(style_bank.FOLDER)  # still registered
        folder_paths.folder_names_and_paths[style_bank.FOLDER][0].remove(str(models_dir))


# --------------------------------------------------------------------------- corrupted and mismatched files


def read_raw(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def write_tampered(output_dir, source: str, name: str, tensors=None, meta=None, contents=None):
    """A copy of a saved style with its tensors, header metadata or Z* JSON changed."""
    raw, metadata = read_raw(output_dir / source)
    if tensors:
        tensors(raw)
    if contents:
        data = json.loads(metadata["zstar"])
        contents(data)
        metadata["zstar"] = json.dumps(data)
    if meta:
        meta(metadata)
    save_file(raw, str(output_dir / name), metadata=metadata)
    return name


def test_corrupted_files_are_refused(inv, output_dir):
    save_style("good", inversion=inv[3])
    (output_dir / "noise.safetensors").write_bytes(os.urandom(300))
    with pytest.raises(ZStarError, match="'noise.safetensors': not a valid safetensors file"):
        load_style("noise.safetensors")
    data = (output_dir / "good.safetensors").read_bytes()
    (output_dir / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ZStarError, match="not a valid safetensors file"):
        load_style("cut.safetensors")
    save_file({"x": torch.zeros(2)}, str(output_dir / "plain.safetensors"))
    with pytest.raises(ZStarError, match="not a Z\\* style"):
        load_style("plain.safetensors")
    write_tampered(output_dir, "good.safetensors", "future.safetensors",
                   meta=lambda m: m.update(format_version="2"))
    with pytest.raises(ZStarError, match="format version '2' is newer"):
        load_style("future.safetensors")
    write_tampered(output_dir, "good.safetensors", "badjson.safetensors", meta=lambda m: m.update(zstar="{oops"))
    with pytest.raises(ZStarError, match="not valid JSON"):
        load_style("badjson.safetensors")


def _drop(name):
    return lambda raw: raw.pop(name)


def _set(name, value):
    return lambda raw: raw.__setitem__(name, value(raw[name]))


INVERSION_TAMPERING = {
    "missing latent": (dict(tensors=_drop("inversion.trajectory.3")), "tensor 'inversion.trajectory.3' is missing"),
    "latent of another size": (dict(tensors=_set("inversion.trajectory.2", lambda t: t[..., :8, :8].contiguous())),
                               r"'inversion.trajectory.2' has shape \[1, 4, 8, 8\], the metadata promises \[1, 4, 16, 16\]"),
    "latent in another dtype": (dict(tensors=_set("inversion.trajectory.1", lambda t: t.half())),
                                "'inversion.trajectory.1' is F16, the metadata promises float32"),
    "one latent too many": (dict(contents=lambda c: c["inversion"].update(steps=STEPS + 1)),
                            f"lists {STEPS + 1} sigmas for {STEPS + 1} steps"),
    "sigmas disagree": (dict(tensors=_set("inversion.sigmas", lambda t: t * 1.001)), "differs from the metadata's sigmas"),
    "short sigma list": (dict(contents=lambda c: c["inversion"]["sigmas"].pop()), f"lists {STEPS} sigmas for {STEPS} steps"),
    "stray tensor": (dict(tensors=lambda raw: raw.update(extra=torch.zeros(1))), "the metadata does not describe: \\['extra'\\]"),
    "NaN": (dict(tensors=_set("inversion.trajectory.0", lambda t: t * float("nan"))), "NaN or infinite"),
    "unknown arch": (dict(contents=lambda c: c["inversion"].update(arch="flux")), "arch 'flux' is not one of"),
    "timesteps": (dict(contents=lambda c: c["inversion"].update(timesteps=[1, 2])), f"timesteps must be {STEPS} integers"),
}


@pytest.mark.parametrize("case", list(INVERSION_TAMPERING))
def test_mismatched_inversion_files_are_refused(inv, output_dir, case):
    save_style("good", inversion=inv[3])
    change, message = INVERSION_TAMPERING[case]
    write_tampered(output_dir, "good.safetensors", "bad.safetensors", **change)
    with pytest.raises(ZStarError, match=message):
        load_style("bad.safetensors")


KV = "record.k.3.output.9.0.0"
RECORD_TAMPERING = {
    "missing step": (dict(tensors=_drop(KV)), f"tensor '{KV}' is missing"),
    "wrong token count": (dict(tensors=_set(KV, lambda t: t[:, 1:].contiguous())), f"'{KV}' has shape \\[1, 255, 32\\]"),
    "not a token grid": (dict(contents=lambda c: c["record"]["shapes"].update({"output.9.0": [255, 32]})),
                         "255 tokens, which is no level"),
    "keys disagree with layers": (dict(contents=lambda c: c["record"].update(layers=[0, 1, 2, 3, 4, 5])),
                                  "keys do not match layers"),
    "window past the end": (dict(contents=lambda c: c["record"].update(end_step=STEPS + 1)), "do not fit"),
    "bad half": (dict(contents=lambda c: c["record"].update(halves=[2])), "halves must be CFG halves"),
    "uncond half promised": (dict(contents=lambda c: c["record"].update(halves=[0, 1])),
                             "'record.k.2.output.6.0.1' is missing"),
}


@pytest.mark.parametrize("case", list(RECORD_TAMPERING))
def test_mismatched_record_files_are_refused(record, output_dir, case):
    save_style("good", record=record)
    change, message = RECORD_TAMPERING[case]
    write_tampered(output_dir, "good.safetensors", "bad.safetensors", **change)
    with pytest.raises(ZStarError, match=message):
        load_style("bad.safetensors")
