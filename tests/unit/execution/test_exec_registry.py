"""PluginRegistry: entry points, config-listed plugins, failures, lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from zambeze_mesh.errors import NotFound
from zambeze_mesh.execution import (
    BasePlugin,
    Outcome,
    Plugin,
    PluginRegistry,
    PythonPlugin,
    RunContext,
    RunRequest,
    ShellPlugin,
)


class EchoPlugin(BasePlugin):
    """A third-party style plugin that also runs shell activities."""

    name = "echo"
    kinds = {"shell", "echo"}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.greeting = str(self.options.get("greeting", "hi"))

    def capabilities(self) -> dict[str, str]:
        return {"greeting": self.greeting}

    async def run(self, req: RunRequest, ctx: RunContext) -> Outcome:
        return Outcome("SUCCEEDED", message=self.greeting)


class BrokenPlugin(BasePlugin):
    name = "broken"
    kinds = {"shell"}

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        raise RuntimeError("no scheduler configured")


class NotAPlugin:
    name = "notaplugin"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        pass


#: Plugins installed beside the built-ins (workflow managers, batch, the example
#: user plugin); disabled here so these tests see only shell, python and their own.
OTHERS = {"dask", "parsl", "batch", "hello"}


@pytest.fixture
async def registry() -> AsyncIterator[PluginRegistry]:
    reg = PluginRegistry.load(
        disabled=OTHERS,
        extra=[
            f"{__name__}:EchoPlugin",
            "no_such_module_zm:Plugin",
            f"{__name__}:BrokenPlugin",
            f"{__name__}:NotAPlugin",
            "missing-colon",
        ],
        options={"echo": {"greeting": "hello"}, "python": {"workers": 1}},
    )
    yield reg
    await reg.close()


async def test_builtins_load_from_entry_points(registry: PluginRegistry) -> None:
    assert registry.names() == ["echo", "python", "shell"]
    assert isinstance(registry.loaded["shell"], ShellPlugin)
    assert isinstance(registry.loaded["python"], PythonPlugin)
    assert all(isinstance(p, Plugin) for p in registry.loaded.values())
    python = registry.loaded["python"]
    assert isinstance(python, PythonPlugin) and python.pool.size == 1


async def test_failures_are_recorded_not_raised(registry: PluginRegistry) -> None:
    failed = registry.failed
    assert set(failed) == {
        "no_such_module_zm:Plugin",
        "broken",
        "notaplugin",
        "missing-colon",
    }
    assert "ModuleNotFoundError" in failed["no_such_module_zm:Plugin"]
    assert "no_such_module_zm" in failed["no_such_module_zm:Plugin"]
    assert "RuntimeError: no scheduler configured" in failed["broken"]
    assert "plugin protocol" in failed["notaplugin"]
    assert "module:Class" in failed["missing-colon"]


async def test_options_and_capabilities(registry: PluginRegistry) -> None:
    caps = registry.capabilities()
    assert caps["plugins"] == "echo,python,shell"
    assert caps["echo.greeting"] == "hello"
    assert caps["python.functions"] == "true"
    assert caps["shell.path"] == "/bin/sh"


async def test_for_kind(registry: PluginRegistry) -> None:
    assert registry.for_kind("shell").name == "shell"
    assert registry.for_kind("python").name == "python"
    assert registry.for_kind("echo").name == "echo"
    assert registry.for_kind("shell", "echo").name == "echo"
    with pytest.raises(NotFound, match="does not run"):
        registry.for_kind("python", "echo")
    with pytest.raises(NotFound, match="failed to load"):
        registry.for_kind("shell", "broken")
    with pytest.raises(NotFound, match="'workflow'"):
        registry.for_kind("workflow")


async def test_disabled_and_unknown_group() -> None:
    reg = PluginRegistry.load(disabled={"python", *OTHERS}, extra=[f"{__name__}:EchoPlugin"])
    try:
        assert reg.names() == ["echo", "shell"]
        assert reg.failed == {}
        # Without a plugin named like the kind, any plugin listing it is used.
        reg.loaded.pop("shell")
        assert reg.for_kind("shell").name == "echo"
    finally:
        await reg.close()
    empty = PluginRegistry.load(entry_point_group="zambeze_mesh.no_such_group")
    assert empty.loaded == {} and empty.failed == {}


async def test_duplicate_name_is_refused() -> None:
    reg = PluginRegistry.load(
        disabled=OTHERS, extra=[f"{__name__}:EchoPlugin", f"{__name__}:EchoPlugin"]
    )
    try:
        assert "echo" in reg.loaded
        assert "duplicate" in reg.failed[f"{__name__}:EchoPlugin"]
    finally:
        await reg.close()
