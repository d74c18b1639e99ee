"""Style bank on real ComfyUI: names and folders, the nodes, and a saved style sampling exactly like
the original. The file format itself (round trips, bad files, limits): tests/core/test_style_file.py."""
from __future__ import annotations

import os

import pytest

import harness

if not harness.COMFYUI_PATH:
    pytest.skip(harness.SKIP_REASON, allow_module_level=True)

import torch

import folder_paths

from zstar_fixtures import _inference_mode, empty, inv, model  # noqa: F401 (pytest fixtures)

harness.load_pack()
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
    with pytest.raises(ZStarError, match="only_inv.safetensors already exists"):
        ZStarSaveStyle.execute(name="only_inv", if_exists="stop", inversion=inv[2])
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


def test_a_bad_file_is_refused_under_its_style_name(output_dir):
    """The format's checks are tests/core/test_style_file.py; here: the error names the style as chosen."""
    output_dir.mkdir(parents=True)
    (output_dir / "noise.safetensors").write_bytes(os.urandom(300))
    with pytest.raises(ZStarError, match="^style file 'noise.safetensors': not a valid safetensors file"):
        load_style("noise.safetensors")


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
