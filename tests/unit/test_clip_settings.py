"""The clipboard's user settings (``clipboard`` in settings.json): the files cap, with the
environment winning and every refusal naming where the cap was set, and the dashboard's
sync toggle remembered, the other settings kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hypercore_tui.core.errors import InvalidInput
from hypercore_tui.services import clipfiles, clipsettings
from hypercore_tui.services.context import Context


def context(tmp_path: Path, **env: str) -> Context:
    return Context.from_environ({"HYPERCORE_HOME": str(tmp_path / "home"),
                                 "HYPERCORE_RUNTIME_DIR": str(tmp_path / "run"), **env})


def write_settings(ctx: Context, doc: object) -> None:
    ctx.layout.settings_file.parent.mkdir(parents=True, exist_ok=True)
    ctx.layout.settings_file.write_text(json.dumps(doc))


def test_the_cap_comes_from_the_settings_and_the_environment_wins(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    settings = ctx.layout.settings_file
    cap = clipfiles.files_cap(ctx)
    assert cap == 1 << 30 and "the default" in cap.origin and str(settings) in cap.origin
    write_settings(ctx, {"clipboard": {"files_max": "2G"}, "hosts": {}})
    cap = clipfiles.files_cap(ctx)
    assert cap == 2 << 30 and cap.origin == f"set by clipboard.files_max in {settings}"
    write_settings(ctx, {"clipboard": {"files_max": 5000}})
    assert clipfiles.files_cap(ctx) == 5000
    env_ctx = context(tmp_path, HYPERCORE_CLIP_FILES_MAX="100000")
    cap = clipfiles.files_cap(env_ctx)
    assert cap == 100000 and cap.origin == "set by HYPERCORE_CLIP_FILES_MAX"
    assert clipsettings.cap_refusal(cap) == ("the copied files are larger than the cap "
                                             "(97.7 KiB, set by HYPERCORE_CLIP_FILES_MAX): "
                                             "not carried")


@pytest.mark.parametrize("value", ["lots", -1, 0, True, [1], "0G"])
def test_a_bad_cap_in_the_settings_is_one_line_naming_the_key(tmp_path: Path,
                                                              value: object) -> None:
    ctx = context(tmp_path)
    write_settings(ctx, {"clipboard": {"files_max": value}})
    with pytest.raises(InvalidInput, match=r"clipboard\.files_max must be a size") as info:
        clipfiles.files_cap(ctx)
    assert str(ctx.layout.settings_file) in str(info.value) and "\n" not in str(info.value)
    write_settings(ctx, {"clipboard": "big"})
    with pytest.raises(InvalidInput, match="'clipboard' must be an object"):
        clipfiles.files_cap(ctx)


def test_the_check_on_the_host_names_where_the_cap_was_set(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    write_settings(ctx, {"clipboard": {"files_max": "1K"}})
    entry = clipfiles.share_files_dir(ctx) / ("e" * 16)
    entry.mkdir(parents=True)
    (entry / "big").write_bytes(b"x" * 2000)
    with pytest.raises(clipfiles.FilesRefused) as info:
        clipfiles.check_entry(ctx, "e" * 16, [b"big"], cut=False, cap=clipfiles.files_cap(ctx))
    assert str(info.value) == ("the copied files are larger than the cap (1.0 KiB, set by "
                               f"clipboard.files_max in {ctx.layout.settings_file}): "
                               "not carried")


def test_the_dashboard_toggle_is_remembered_and_other_keys_kept(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert clipsettings.dashboard_sync(ctx) is False  # no file yet
    write_settings(ctx, {"hosts": {"b": {"ssh": "b.example"}}, "future": [1, 2],
                         "clipboard": {"files_max": "2G", "later": "kept"}})
    clipsettings.remember_dashboard_sync(ctx, True)
    assert clipsettings.dashboard_sync(ctx) is True
    doc = json.loads(ctx.layout.settings_file.read_text())
    assert doc == {"hosts": {"b": {"ssh": "b.example"}}, "future": [1, 2],
                   "clipboard": {"files_max": "2G", "later": "kept", "dashboard_sync": True}}
    clipsettings.remember_dashboard_sync(ctx, False)
    assert clipsettings.dashboard_sync(ctx) is False
