"""Building frozen dataclass values on the decision path without their generated ``__init__``.

A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__`` (the class's own
``__setattr__`` refuses): about 2 µs for a 5-field value in CPython 3.11. ``decide`` builds several such
values per call (the next :class:`~scaler.policy.PolicyState`, the :class:`~scaler.policy.Decision`, the
capacity learner's next state), and the simulator calls it 40,321 times over the bundled week, so
:func:`new` fills the instance dictionary in one ``dict.update`` instead (about half the time).

The caller passes every field, in the class's field order, and the values the generated ``__init__``
would store (no ``__post_init__`` runs: use it only for classes without one). The instance is the same
as the constructor's: equality, ``repr``, ``dataclasses.replace`` and immutability are the class's
(``tests/unit/test_frozen.py``).
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

T = TypeVar("T")

_new_object = object.__new__


def new(cls: type[T], fields: Mapping[str, Any]) -> T:
    """An instance of the frozen dataclass ``cls`` holding ``fields`` (every field, none other)."""
    obj = _new_object(cls)
    obj.__dict__.update(fields)
    return obj
