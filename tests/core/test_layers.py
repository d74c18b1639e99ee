"""Layer strings, step windows, and the paper preset (each family's layer numbering: tests/comfy/test_families.py)."""
import pytest

from zstar_attention import PAPER_PRESET, ZStarError, parse_layers, select_attn1_keys, step_window


@pytest.mark.parametrize("spec, expected", [
    ("10-15", (10, 11, 12, 13, 14, 15)),
    ("10,12,14", (10, 12, 14)),
    ("0-3, 10-15", (0, 1, 2, 3, 10, 11, 12, 13, 14, 15)),
    ("  14 , 10 - 11,10 ", (10, 11, 14)),
    ("all", tuple(range(16))),
    (" ALL ", tuple(range(16))),
    ("7", (7,)),
    ("3-3", (3,)),
    ("0-15", tuple(range(16))),
])
def test_parse_layers_good(spec, expected):
    assert parse_layers(spec, 16) == expected


@pytest.mark.parametrize("spec, fragment", [
    ("", "layers: is empty; use e.g. '10-15' or '10,12,14' (layers 0-15) or 'all'"),
    ("   ", "layers: is empty"),
    ("10-x", "layers: '10-x' is not a layer number; use e.g. '10-15' or '10,12,14' (layers 0-15)"),
    ("ten", "layers: 'ten' is not a layer number"),
    ("-3", "layers: '-3' is not a layer number"),
    ("1.5", "layers: '1.5' is not a layer number"),
    ("15-10", "layers: range '15-10' is reversed; write '10-15' (layers 0-15)"),
    ("10-16", "layers: layer 16 is out of range (layers 0-15)"),
    ("99", "layers: layer 99 is out of range (layers 0-15)"),
    ("10,,12", "layers: '10,,12' has an empty item between commas"),
    ("10,", "has an empty item between commas"),
    (None, "layers: expected a string, got NoneType"),
])
def test_parse_layers_bad(spec, fragment):
    with pytest.raises(ZStarError) as info:
        parse_layers(spec, 16)
    assert fragment in str(info.value)


def test_parse_layers_names_the_range_of_the_keys_given():
    with pytest.raises(ZStarError) as info:
        select_attn1_keys("70", [("output", i, 0) for i in range(70)])
    assert "layers: layer 70 is out of range (layers 0-69)" in str(info.value)


def test_step_window_paper_preset():
    window = step_window(PAPER_PRESET.steps, PAPER_PRESET.start_step, PAPER_PRESET.end_step)
    assert len(window) == 30
    assert [i for i, on in enumerate(window) if on] == list(range(5, 30))
    assert step_window(10, 0, 10) == (True,) * 10
    assert step_window(4, 1, 3) == (False, True, True, False)


@pytest.mark.parametrize("args, fragment", [
    ((30, 30, 30), "start_step: 30 is out of range; use 0 to 29 (30 steps)"),
    ((30, -1, 10), "start_step: -1 is out of range; use 0 to 29 (30 steps)"),
    ((30, 5, 31), "end_step: 31 is out of range; use 1 to 30 (30 steps, end is exclusive)"),
    ((30, 10, 5), "start_step: 10 must be less than end_step 5 (30 steps, end is exclusive)"),
    ((30, 5, 5), "start_step: 5 must be less than end_step 5"),
    ((0, 0, 1), "steps: must be at least 1, got 0"),
    ((30, 5.0, 30), "start_step: must be an integer, got 5.0"),
])
def test_step_window_bad(args, fragment):
    with pytest.raises(ZStarError) as info:
        step_window(*args)
    assert fragment in str(info.value)


def test_paper_preset_values():
    assert dict(PAPER_PRESET) == PAPER_PRESET.as_dict() == {
        "steps": 30, "style_scale": 1.2, "style_self_scale": 1.5, "layers": "10-15", "start_step": 5,
        "end_step": 30, "anchor": 0.01, "cfg_nulltext": 7.5, "nulltext_iterations": 10, "nulltext_lr": 1e-2,
    }
    assert PAPER_PRESET["style_scale"] == PAPER_PRESET.style_scale == 1.2
    with pytest.raises(Exception):
        PAPER_PRESET.steps = 10  # frozen


@pytest.mark.parametrize("spec, out_of_range, reworded", [
    ("16", True, "layers: layer 16 is out of range (every model's layers)"),
    ("3-1", False, "layers: range '3-1' is reversed; write '1-3' (every model's layers)"),
    ("x", False, "layers: 'x' is not a layer number; use e.g. '10-15' or '10,12,14' (every model's layers)"),
    ("", False, "layers: is empty; use e.g. '10-15' or '10,12,14' (every model's layers) or 'all'"),
])
def test_layer_string_errors_are_structured(spec, out_of_range, reworded):
    """The nodes tell a range error from a syntax error and reword the allowed layers from the
    error's fields, not by parsing its text."""
    from zstar_attention.layers import LayerStringError

    with pytest.raises(LayerStringError) as info:
        parse_layers(spec, 16)
    assert info.value.out_of_range is out_of_range
    assert str(info.value) == reworded.replace("(every model's layers)", "(layers 0-15)")
    assert info.value.with_allowed("(every model's layers)") == reworded
