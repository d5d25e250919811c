"""Sub-commands imported when they are used: Click's "lazy group", for Typer.

A business area's commands import its services and models, and through them SQLAlchemy, Stripe's
SDK and the rest: ~3 s for all of them on a 2-core machine, against ~0.2 s for Typer itself. A
``LazyGroup`` knows its sub-commands by name, module and one-line help (a ``Lazy``), lists them in
``--help`` from that alone, and imports a module only when one of its commands is run, asked for
its own ``--help`` or completed. So ``entitle --help`` imports no business area, and a command only
the areas it uses.

The group keeps Click's contract: ``commands`` maps every name to its command and
``get_command`` returns the real one (both import it on first use); only listing the commands
(help, shell completion) uses the registry's help instead of importing them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_group

if TYPE_CHECKING:
    from typer import _click
    from typer._click.shell_completion import CompletionItem


@dataclass(frozen=True)
class Lazy:
    """A sub-command by where it is defined (``module:attribute``: a Typer app, or a command
    function) and the one-line help that lists it. Registered the way ``add_typer(app, name=…)``
    or ``command(name)(function)`` would."""

    name: str
    target: str
    help: str

    def load(self, *, rich_markup_mode: Any, suggest_commands: bool) -> _click.Command:
        module, _, attribute = self.target.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        # Built by Typer itself from a one-entry app, exactly as it builds a registered one.
        holder = typer.Typer(add_completion=False, rich_markup_mode=rich_markup_mode,
                             suggest_commands=suggest_commands)
        if isinstance(found, typer.Typer):
            holder.add_typer(found, name=self.name)
        else:
            holder.command(self.name)(found)
        return get_group(holder).commands[self.name]


class LazyCommands(MutableMapping[str, "_click.Command"]):
    """A group's sub-commands by name, in the order they are listed: the ones given first, then the
    registry's. Looking one up imports it the first time; names, ``in`` and ``len`` never do."""

    def __init__(self, given: Mapping[str, _click.Command], lazy: Sequence[Lazy],
                 load: Callable[[Lazy], _click.Command]) -> None:
        self._loaded = dict(given)
        self._lazy = {entry.name: entry for entry in lazy if entry.name not in self._loaded}
        self._order = [*self._loaded, *self._lazy]
        self._load = load

    def __getitem__(self, name: str) -> _click.Command:
        if name not in self._loaded:
            self._loaded[name] = self._load(self._lazy[name])
        return self._loaded[name]

    def __setitem__(self, name: str, command: _click.Command) -> None:
        if name not in self._order:
            self._order.append(name)
        self._lazy.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._order:
            raise KeyError(name)
        self._order.remove(name)
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def listed(self, name: str) -> _click.Command | None:
        """What a listing shows for ``name``: the command if it is imported, else a stand-in that
        has only its name and registered help (it is never run)."""
        if name in self._loaded:
            return self._loaded[name]
        entry = self._lazy.get(name)
        return TyperCommand(name=entry.name, help=entry.help) if entry else None


class LazyGroup(TyperGroup):
    """A Typer group whose sub-commands in ``lazy`` are imported when used. Subclass it with the
    registry and give it to ``typer.Typer(cls=…)``."""

    lazy: ClassVar[Sequence[Lazy]] = ()

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(self.commands, self.lazy, self._load)
        self._listing = False

    def _load(self, entry: Lazy) -> _click.Command:
        command = entry.load(rich_markup_mode=self.rich_markup_mode, suggest_commands=self.suggest_commands)
        # Listed with the same words whether it was imported or not.
        command.short_help = entry.help
        return command

    @contextmanager
    def _listing_only(self) -> Iterator[None]:
        self._listing = True
        try:
            yield
        finally:
            self._listing = False

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(self.commands)  # TyperGroup's walks .items(), which would import every one

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        commands: LazyCommands = self.commands  # type: ignore[assignment]
        return commands.listed(cmd_name) if self._listing else commands.get(cmd_name)

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        with self._listing_only():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: _click.Context, incomplete: str) -> list[CompletionItem]:
        with self._listing_only():
            return super().shell_complete(ctx, incomplete)
