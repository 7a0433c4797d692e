"""Dataset parameters: merged over a module's ``DEFAULT_PARAMS`` and checked, with errors that name
the config key (``datasets.<name>.<key>``), its value and what is allowed."""

from __future__ import annotations

from typing import Any


def merge(
    name: str,
    defaults: dict[str, Any],
    params: dict[str, Any] | None,
    optional: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``defaults`` updated with ``params``; an unknown key is a ValueError listing the allowed.
    Keys of ``optional`` (a module's ``OPTIONAL_PARAMS``: {key: the value that means unset}) are
    accepted too but kept only when set to another value, so that a dataset made before such a
    key existed keeps its recorded params, and with them its manifest, byte for byte."""
    params = dict(params or {})
    optional = optional or {}
    unknown = sorted(set(params) - set(defaults) - set(optional))
    if unknown:
        allowed = ", ".join(repr(key) for key in sorted({*defaults, *optional}))
        raise ValueError(
            f"datasets.{name}: unknown param(s) {', '.join(map(repr, unknown))}; allowed: {allowed}"
        )
    unset = [key for key, value in optional.items() if key in params and params[key] == value]
    for key in unset:
        del params[key]
    return {**defaults, **params}


def invalid(name: str, key: str, value: Any, what: str) -> ValueError:
    """The error for one bad value: ``datasets.<name>.<key>=<value>: <what>``."""
    return ValueError(f"datasets.{name}.{key}={value!r}: {what}")


def integer(name: str, params: dict, key: str, minimum: int = 0, optional: bool = False) -> None:
    """``params[key]`` must be an int >= ``minimum`` (or None when ``optional``)."""
    value = params[key]
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        null = " or null" if optional else ""
        raise invalid(name, key, value, f"must be an integer of at least {minimum}{null}")


def number(name: str, params: dict, key: str, low: float, high: float) -> None:
    """``params[key]`` must be a number in [low, high]."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise invalid(name, key, value, f"must be a number in [{low}, {high}]")


def choice(name: str, params: dict, key: str, allowed: tuple) -> None:
    """``params[key]`` must be one of ``allowed``."""
    if params[key] not in allowed:
        raise invalid(name, key, params[key], f"allowed: {list(allowed)}")
