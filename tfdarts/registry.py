"""A small name -> factory registry with loud errors."""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterable, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; unknown names fail listing the known ones.

    Args:
        kind: What the registry holds, used in error messages (e.g. "op").
    """

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering `fn` under `name`."""

        def wrap(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self._kind} {name!r} is already registered")
            self._items[name] = fn
            return fn

        return wrap

    def unregister(self, name: str) -> None:
        """Removes `name` (for plug-ins and tests that register temporarily)."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        """Returns the factory registered under `name`.

        Raises:
            KeyError: `name` is unknown; the message lists the known names.
        """
        if name not in self._items:
            raise KeyError(
                f"unknown {self._kind} {name!r}; known {self._kind}s: "
                f"{', '.join(sorted(self._items))}")
        return self._items[name]

    def check(self, names: Iterable[str]) -> None:
        """Raises KeyError for the first unknown name in `names`."""
        for name in names:
            self.get(name)

    def names(self) -> tuple:
        """All registered names, sorted."""
        return tuple(sorted(self._items))

    def __contains__(self, name: object) -> bool:
        return name in self._items
