"""Build the pluggy plugin manager: hookspecs, built-in plugins, then trusted plugins from
the ``crm_module_host.plugins`` entry-point group, filtered by ``CRM_HOST_PLUGINS``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from host import hookspecs
from host.errors import HostError

ENTRY_POINT_GROUP = "crm_module_host.plugins"


class PluginLoadError(HostError):
    """An installed, allowed entry-point plugin failed to import: the host does not start
    without a plugin it was told to trust (an audit plugin silently missing is worse)."""

    kind = "configuration"


log = logging.getLogger(__name__)


def make_plugin_manager(
    builtins: Iterable[tuple[str, object]] = (),
    *,
    allow: list[str] | None = None,
    load_entry_points: bool = True,
) -> pluggy.PluginManager:
    """A manager with the host's hookspecs and the given plugins.

    ``allow`` is the entry-point allow-list (like datasette's ``DATASETTE_LOAD_PLUGINS``):
    ``None`` loads every installed plugin, an empty list loads none.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name, plugin in builtins:
        manager.register(plugin, name=name)
    if load_entry_points:
        _load_entry_points(manager, allow)
    return manager


def _load_entry_points(manager: pluggy.PluginManager, allow: list[str] | None) -> None:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if allow is not None and entry.name not in allow:
            continue
        if manager.get_plugin(entry.name) is not None:
            continue
        try:
            plugin = entry.load()
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {entry.name} ({entry.value}) could not be loaded: "
                f"{type(exc).__name__}: {exc}; uninstall it or leave it out of CRM_HOST_PLUGINS"
            ) from exc
        manager.register(plugin, name=entry.name)
        log.info("loaded plugin %s from %s", entry.name, entry.value)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    hooks: list[str]
    """The hooks it implements, sorted."""


def describe_plugins(manager: pluggy.PluginManager) -> list[PluginInfo]:
    """Registered plugins and the hooks each implements (the ``/-/plugins`` listing)."""
    described = []
    for name, plugin in manager.list_name_plugin():
        hooks = sorted(h.name for h in manager.get_hookcallers(plugin) or [])
        described.append(PluginInfo(name, hooks))
    return described


def notify(manager: pluggy.PluginManager, event: str, **kwargs: Any) -> None:
    """Fire an event hook; a plugin that raises is logged, the event stands."""
    caller = getattr(manager.hook, event)
    for impl in reversed(caller.get_hookimpls()):
        try:
            impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        except Exception:
            log.exception("plugin %s failed in %s", impl.plugin_name, event)
