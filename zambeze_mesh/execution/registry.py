"""Find, construct and look up execution plugins.

Plugins come from the entry-point group ``zambeze_mesh.plugins`` (the built-ins
and any installed package) and from ``"module:Class"`` strings in the agent
config. A plugin that fails to import or construct is recorded in ``failed``
with the reason and logged; it never stops the agent. A plugin whose optional
dependency is not installed (its constructor raises :class:`Unavailable`) is recorded
in ``missing`` instead: that is a choice of the installation, not an error. The first plugin of a
name wins; later ones of the same name are recorded as failed.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from zambeze_mesh.errors import NotFound, Unavailable
from zambeze_mesh.execution.plugin import Plugin

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "zambeze_mesh.plugins"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def import_object(spec: str) -> Any:
    """Import ``"module:attr.path"`` and return the object."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:Class', got {spec!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class PluginRegistry:
    """The plugins this agent loaded (``loaded``), those that failed (``failed``) and
    those whose optional dependency is not installed (``missing``), with the reasons."""

    def __init__(self) -> None:
        self.loaded: dict[str, Plugin] = {}
        self.failed: dict[str, str] = {}
        self.missing: dict[str, str] = {}

    @classmethod
    def load(
        cls,
        entry_point_group: str = ENTRY_POINT_GROUP,
        extra: Iterable[str] = (),
        disabled: Iterable[str] = (),
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> PluginRegistry:
        """Load entry-point plugins, then ``extra`` ``"module:Class"`` ones.

        ``disabled`` names plugins to skip; ``options[name]`` is passed to the
        plugin's constructor as ``options=``.
        """
        reg = cls()
        skip = set(disabled)
        opts = options or {}
        for ep in sorted(entry_points(group=entry_point_group), key=lambda e: e.name):
            if ep.name in skip:
                log.info("plugin %s disabled by config", ep.name)
                continue
            reg._add(ep.name, ep.value, ep.load, skip, opts)
        for spec in extra:
            reg._add(None, spec, functools.partial(import_object, spec), skip, opts)
        log.info(
            "plugins loaded=%s failed=%s", ",".join(reg.loaded) or "-", ",".join(reg.failed) or "-"
        )
        return reg

    def add(self, plugin: Plugin) -> None:
        """Register an already constructed plugin (tests, embedding)."""
        if plugin.name in self.loaded:
            raise ValueError(f"plugin {plugin.name!r} is already loaded")
        self.loaded[plugin.name] = plugin

    def _add(
        self,
        name: str | None,
        source: str,
        loader: Callable[[], Any],
        skip: set[str],
        options: Mapping[str, Mapping[str, Any]],
    ) -> None:
        label = name or source
        try:
            factory = loader()
        except Exception as exc:
            self._fail(label, f"cannot import {source}: {_reason(exc)}")
            return
        pname = name or getattr(factory, "name", None) or source
        if not isinstance(pname, str):
            self._fail(label, f"{source} has a non-string name {pname!r}")
            return
        if pname in skip:
            log.info("plugin %s disabled by config", pname)
            return
        if pname in self.loaded:
            self._fail(source, f"duplicate plugin name {pname!r}")
            return
        try:
            plugin = factory(options=dict(options.get(pname, {})))
        except Unavailable as exc:
            log.info("plugin %s not available: %s", pname, exc)
            self.missing[pname] = str(exc)
            return
        except Exception as exc:
            self._fail(pname, f"cannot construct {source}: {_reason(exc)}")
            return
        if not isinstance(plugin, Plugin):
            self._fail(pname, f"{source} does not implement the plugin protocol")
            return
        if plugin.name != pname:
            log.warning("plugin %s registered as %s", plugin.name, pname)
        self.loaded[pname] = plugin

    def _fail(self, name: str, reason: str) -> None:
        log.warning("plugin %s not loaded: %s", name, reason)
        self.failed[name] = reason

    def names(self) -> list[str]:
        """Names of the loaded plugins, sorted."""
        return sorted(self.loaded)

    def for_kind(self, kind: str, plugin_name: str | None = None) -> Plugin:
        """The plugin to run an activity of ``kind`` (or the named one).

        Without a name, a plugin named like the kind is preferred, then any
        plugin that lists the kind. Raises NotFound when none fits.
        """
        if plugin_name:
            plugin = self.loaded.get(plugin_name)
            if plugin is None:
                why = self.failed.get(plugin_name) or self.missing.get(plugin_name)
                extra = f" (failed to load: {why})" if why else ""
                raise NotFound(f"no plugin {plugin_name!r} on this agent{extra}")
            if kind not in plugin.kinds:
                raise NotFound(f"plugin {plugin_name!r} does not run {kind!r} activities")
            return plugin
        named = self.loaded.get(kind)
        if named is not None and kind in named.kinds:
            return named
        for pname in self.names():
            if kind in self.loaded[pname].kinds:
                return self.loaded[pname]
        raise NotFound(f"no plugin on this agent runs {kind!r} activities")

    def capabilities(self) -> dict[str, str]:
        """``plugins`` (comma-separated names) plus each plugin's ``name.key`` facts."""
        caps = {"plugins": ",".join(self.names())}
        for pname in self.names():
            try:
                for key, value in self.loaded[pname].capabilities().items():
                    caps[f"{pname}.{key}"] = value
            except Exception:
                log.exception("plugin %s capabilities() failed", pname)
        return caps

    async def close(self) -> None:
        """Close every plugin (errors are logged)."""
        for pname in self.names():
            try:
                await self.loaded[pname].close()
            except Exception:
                log.exception("plugin %s close() failed", pname)
