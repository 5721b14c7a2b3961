"""VM definitions on disk: ``vms/NAME/vm.json`` read and written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from hypercore_tui.adapters.fs import atomic_write_json
from hypercore_tui.core.errors import AlreadyExists, InvalidInput, NotFound, OperationFailed
from hypercore_tui.core.layout import VmPaths
from hypercore_tui.core.models import VmSpec
from hypercore_tui.core.names import validate_vm_name
from hypercore_tui.services.context import Context


def vm_names(ctx: Context) -> list[str]:
    """Names of all defined VMs, sorted (directories with a vm.json)."""
    root = ctx.layout.vms_dir
    if not root.is_dir():
        return []
    names = []
    for entry in root.iterdir():
        try:
            validate_vm_name(entry.name)
        except InvalidInput:
            continue
        if (entry / "vm.json").is_file():
            names.append(entry.name)
    return sorted(names)


def exists(ctx: Context, name: str) -> bool:
    return ctx.vm_paths(name).definition.is_file()


def _not_found(name: str) -> NotFound:
    return NotFound(f"no VM named {name!r} (see `hypercore list`)")


def check_defined(ctx: Context, name: str) -> None:
    """:class:`NotFound` unless ``name`` has a definition (not read: :func:`load` says
    what is wrong with one that exists)."""
    try:
        ctx.vm_paths(name).definition.stat()
    except FileNotFoundError:
        raise _not_found(name) from None
    except OSError:
        pass


def load(ctx: Context, name: str) -> VmSpec:
    path = ctx.vm_paths(name).definition
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _not_found(name) from None
    except OSError as exc:
        raise OperationFailed(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise OperationFailed(f"{path} is not valid JSON; fix or remove it") from None
    if not isinstance(data, dict):
        raise OperationFailed(f"{path} does not hold a VM definition")
    try:
        spec = VmSpec.from_dict(data)
    except InvalidInput as exc:
        raise OperationFailed(f"{path}: {exc}") from None
    if spec.name != name:
        raise OperationFailed(f"{path} names the VM {spec.name!r}, not {name!r}")
    return spec


def claim_vm_dir(ctx: Context, name: str) -> VmPaths:
    """Create the new VM's directory, exclusively: two creates (or clones) of one name
    cannot both win. The caller removes it again if it fails before saving."""
    ctx.ensure_home()
    paths = ctx.vm_paths(name)
    try:
        paths.vm_dir.mkdir()
    except FileExistsError:
        raise AlreadyExists(f"a VM named {name!r} already exists") from None
    except OSError as exc:
        raise OperationFailed(f"cannot create {paths.vm_dir}: {exc.strerror}") from None
    return paths


def save(ctx: Context, spec: VmSpec) -> Path:
    path = ctx.vm_paths(spec.name).definition
    atomic_write_json(path, spec.to_dict())
    return path
