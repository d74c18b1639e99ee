"""Where style files live and which names may be read or written (the style bank's folders).

Files live in `<ComfyUI output>/zstar_styles/` (where Z* Save Style writes) and in any
`zstar_styles` model folder (models/zstar_styles, or extra_model_paths.yaml), so a style can
be shared without its source image. Names are confined to those folders: plain parts, no
absolute paths, no links that lead outside. The file format itself: zstar_attention/style_file.py.
"""
from __future__ import annotations

import contextlib
import os
import re

import folder_paths

from ..zstar_attention import ZStarError
from ..zstar_attention.style_file import EXTENSION, read_style_file, write_style_file
from ..zstar_attention.style_types import Inversion, StyleRecord
from .families import layer_tables

FOLDER = "zstar_styles"
NONE = "none"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")

if FOLDER not in folder_paths.folder_names_and_paths:  # models/zstar_styles, like any model folder
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))


def output_folder() -> str:
    return os.path.join(folder_paths.get_output_directory(), FOLDER)


def style_folders() -> list[str]:
    """Where styles are looked up, in order: the output folder, then the model folders."""
    folders = [output_folder()]
    with contextlib.suppress(KeyError):
        folders += [f for f in folder_paths.get_folder_paths(FOLDER) if f not in folders]
    return folders


def check_part(part: str, what: str) -> str:
    if part in (".", "..") or not _NAME.match(part) or part.endswith((".", " ")):
        raise ZStarError(f"{what}: '{part}' is not allowed; use letters, digits, space, '_', '-' and '.', "
                         "starting with a letter or digit (at most 100 characters)")
    return part


def save_name(name: str) -> str:
    """'my style' or 'my style.safetensors' → 'my style.safetensors' (no folders)."""
    name = name.strip()
    if name.lower().endswith(EXTENSION):
        name = name[: -len(EXTENSION)]
    if "/" in name or "\\" in name:
        raise ZStarError(f"name: '{name}' contains a path separator; give a plain name, it is saved in "
                         f"output/{FOLDER}/")
    return check_part(name, "name") + EXTENSION


def inside(path: str, folder: str) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, root]) == root


def resolve(name: str) -> str:
    """The file a style name refers to: a relative path with '/' separators, ending in
    .safetensors, that stays inside one of style_folders() once symlinks are resolved."""
    if not isinstance(name, str) or not name or name == NONE:
        raise ZStarError(f"style: no style chosen; pick a file saved with Z* Save Style (in output/{FOLDER}/)")
    if not name.endswith(EXTENSION):
        raise ZStarError(f"style: '{name}' is not a {EXTENSION} file; Z* loads styles from safetensors only")
    if "\\" in name or name.startswith("/") or os.path.isabs(name):
        raise ZStarError(f"style: '{name}' must be a name relative to the style folders, not a path")
    for part in name.split("/"):
        check_part(part, "style")
    for folder in style_folders():
        path = os.path.join(folder, *name.split("/"))
        if os.path.lexists(path):
            if not inside(path, folder):
                raise ZStarError(f"style: '{name}' points outside {folder} (a link?); refusing to read it")
            if os.path.isfile(path):
                return os.path.realpath(path)
    raise ZStarError(f"style: '{name}' not found in {', '.join(style_folders())}; save it with Z* Save Style first")


def list_styles() -> list[str]:
    """Every loadable style file, as names relative to its folder (first folder wins)."""
    names = []
    for folder in style_folders():
        if not os.path.isdir(folder):
            continue
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file in files:
                path = os.path.join(root, file)
                rel = os.path.relpath(path, folder).replace(os.sep, "/")
                if file.startswith(".") or not file.endswith(EXTENSION) or not inside(path, folder):
                    continue
                if all(_NAME.match(p) for p in rel.split("/")) and rel not in names:
                    names.append(rel)
    return sorted(names, key=str.lower)


def save_style(name: str, inversion: Inversion | None = None, record: StyleRecord | None = None,
               overwrite: bool = False) -> str:
    """Write the style atomically to output/zstar_styles/<name>.safetensors; returns the style name."""
    if inversion is None and record is None:
        raise ZStarError("inversion/record: connect a style inversion, a style record, or both")
    file_name = save_name(name)
    folder = output_folder()
    os.makedirs(folder, exist_ok=True)
    write_style_file(folder, file_name, inversion, record, overwrite=overwrite)
    return file_name


def load_style(name: str) -> tuple[Inversion | None, StyleRecord | None]:
    """Read and check a style file by its name in the style folders."""
    return read_style_file(resolve(name), f"'{name}'", layer_tables())
