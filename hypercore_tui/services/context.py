"""The one object services share: where things are and what the host offers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hypercore_tui.adapters.fs import ensure_private_dir
from hypercore_tui.core.layout import Layout, VmPaths


@dataclass
class Context:
    layout: Layout
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Context:
        env = dict(os.environ if environ is None else environ)
        layout = Layout.from_environ(env, uid=os.getuid(), user_home=Path.home())
        return cls(layout=layout, environ=env)

    def ensure_home(self) -> None:
        """Create HYPERCORE_HOME, vms/ and the shared folder (the home stays private)."""
        ensure_private_dir(self.layout.home)
        self.layout.vms_dir.mkdir(exist_ok=True)
        self.layout.shared_folder.mkdir(exist_ok=True)

    def ensure_runtime(self, paths: VmPaths) -> None:
        ensure_private_dir(self.layout.runtime_base)
        ensure_private_dir(self.layout.runtime_dir)
        ensure_private_dir(paths.run_dir)

    def vm_paths(self, name: str) -> VmPaths:
        return self.layout.vm(name)

    @property
    def ceph_conf(self) -> str | None:
        """The configured Ceph cluster: HYPERCORE_CEPH_CONF, else the dev cluster's conf."""
        conf = self.environ.get("HYPERCORE_CEPH_CONF")
        if conf:
            return conf
        dev = self.layout.home / "ceph" / "ceph.conf"
        return str(dev) if dev.exists() else None
