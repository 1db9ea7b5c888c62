"""cli.main: the lazy command groups are listed without being imported, and listed as their
own help says."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from outguard.cli import main


def test_help_lists_every_lazy_command_without_importing_it() -> None:
    code = ("import sys; from outguard.cli.main import cli, LAZY_COMMANDS\n"
            "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "loaded = [t for t in LAZY_COMMANDS.values() if t.split(':')[0] in sys.modules]\n"
            "print('LOADED', loaded)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "LOADED []" in out
    for name in main.LAZY_COMMANDS:
        assert f"\n  {name} " in out


@pytest.mark.parametrize("name", sorted(main.LAZY_COMMANDS))
def test_lazy_help_is_the_commands_own(name: str) -> None:
    module, _, attr = main.LAZY_COMMANDS[name].partition(":")
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command)
    for limit in (30, 45, 80, 200):
        stand_in = click.Command(name, help=main.LAZY_HELP[name])
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit)


def test_help_listing_equals_clicks_own_once_everything_is_imported() -> None:
    group = main.cli
    assert isinstance(group, click.Group)
    fresh = main.LazyGroup(commands={n: c for n, c in group.commands.items()
                                     if n not in main.LAZY_COMMANDS})
    ctx = click.Context(fresh)
    lazy = click.HelpFormatter(width=100)
    fresh.format_commands(ctx, lazy)
    for name in main.LAZY_COMMANDS:
        fresh.get_command(ctx, name)  # imported and added
    own = click.HelpFormatter(width=100)
    click.Group.format_commands(fresh, ctx, own)
    assert lazy.getvalue() == own.getvalue()
    assert all(f"  {name} " in lazy.getvalue() for name in main.LAZY_COMMANDS)
