"""A faster ``__init__`` for the frozen dataclasses built at every decision.

A frozen dataclass's generated ``__init__`` stores each field through ``object.__setattr__`` (the class's
own ``__setattr__`` refuses), one global lookup and one call per field, several times the cost of the same
class unfrozen (figures: ``docs/simulation.md``, "Speed"). The simulator builds one ``Signals``, one
``PolicyState``, one ``Decision`` and a few smaller values per decision; the server builds them per target
per refresh.

:func:`fast_init`, applied on top of ``@dataclass(frozen=True)``, replaces ``__init__`` with one that has
the same parameters (names, order, defaults, ``default_factory`` fields) and fills the instance dictionary
in one ``dict.update``, then calls ``__post_init__`` when the class has one. Everything else is the
dataclass's: equality, ``repr``, hashing, ``dataclasses.replace`` (it calls the class) and immutability
(``__setattr__`` still refuses). The generated ``__init__`` is kept as ``_dataclass_init`` so that
``tests/unit/test_frozen.py`` can check, class by class, that both build the same instance.

Limits (checked when the decorator runs): no ``InitVar`` and no keyword-only fields, which none of the
project's classes use.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

T = TypeVar("T", bound=type)


def fast_init(cls: T) -> T:
    """Replace the ``__init__`` of the frozen dataclass ``cls`` (see the module docstring)."""
    if not (dataclasses.is_dataclass(cls) and getattr(cls, "__dataclass_params__").frozen):  # noqa: B009 (typed as `type`)
        raise TypeError(f"fast_init applies to frozen dataclasses, not {cls.__name__}")
    generated = [n for n in inspect.signature(cls.__init__).parameters][1:]
    if generated != [f.name for f in dataclasses.fields(cls) if f.init]:
        raise TypeError(f"fast_init: {cls.__name__}.__init__ takes {generated}, not its fields (InitVar?)")
    namespace: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    params, items = [], []
    for f in dataclasses.fields(cls):
        if f.kw_only:
            raise TypeError(f"fast_init: {cls.__name__}.{f.name} is keyword-only (not supported)")
        has_default = f.default is not dataclasses.MISSING
        has_factory = f.default_factory is not dataclasses.MISSING
        if has_default:
            namespace[f"_default_{f.name}"] = f.default
        if has_factory:
            namespace[f"_factory_{f.name}"] = f.default_factory
        if not f.init:   # set from its default, as the generated __init__ does
            value = f"_factory_{f.name}()" if has_factory else f"_default_{f.name}"
        elif has_factory:
            params.append(f"{f.name}=_MISSING")
            value = f"_factory_{f.name}() if {f.name} is _MISSING else {f.name}"
        elif has_default:
            params.append(f"{f.name}=_default_{f.name}")
            value = f.name
        else:
            params.append(f.name)
            value = f.name
        items.append(f"{f.name!r}: {value}")
    post = "\n    self.__post_init__()" if hasattr(cls, "__post_init__") else ""
    source = (f"def __init__(self, {', '.join(params)}):\n"
              f"    self.__dict__.update({{{', '.join(items)}}}){post}\n")
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    setattr(cls, "_dataclass_init", cls.__init__)  # noqa: B010 (mypy: a class's methods are not assignable)
    setattr(cls, "__init__", init)  # noqa: B010
    return cls
