"""Build the pluggy plugin manager: hookspecs, built-in plugins, then trusted plugins from
the ``crm_module_host.plugins`` entry-point group, filtered by ``CRM_HOST_PLUGINS``.

A hook implementation whose name no spec declares is a typo or a plugin written for another
contract version: pluggy would register it and never call it. So every plugin is checked
(pluggy's ``check_pending()``): a built-in one stops start-up (the host's own code is
wrong), an entry-point one is refused with one log line and the host starts without it (a
third party's mistake must not take the platform down, nor half-work silently).
"""

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
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        name = manager.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginLoadError(
            f"built-in plugin {name} implements unknown hook(s) "
            f"{', '.join(unknown_hooks(manager, exc.plugin))}: no hookspec declares them"
        ) from None
    return manager


def unknown_hooks(manager: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hooks ``plugin`` implements that no spec declares (``optionalhook`` ones excepted)."""
    return sorted(
        caller.name
        for caller in manager.get_hookcallers(plugin) or []
        if not caller.has_spec()
        and any(not impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin)
    )


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
        refusal = _register_checked(manager, entry.name, plugin)
        if refusal:
            log.error("refused plugin %s (%s): %s", entry.name, entry.value, refusal)
            continue
        log.info("loaded plugin %s from %s", entry.name, entry.value)


def _register_checked(manager: pluggy.PluginManager, name: str, plugin: object) -> str | None:
    """Register ``plugin``; if a hook of it does not fit the specs, unregister it again and
    say why (pluggy refuses wrong arguments at registration; unknown names only later)."""
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        return str(exc).replace("\n", "; ")
    unknown = unknown_hooks(manager, plugin)
    if unknown:
        manager.unregister(plugin, name=name)
        return f"unknown hook(s) {', '.join(unknown)}: no hookspec declares them"
    return None


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
