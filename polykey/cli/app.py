"""The click application behind ``pk``. Subcommand groups live in sibling modules."""

from __future__ import annotations

import click

from polykey import __version__
from polykey.cli.common import common_options
from polykey.cli.errors import run_guarded
from polykey.cli.agent import agent
from polykey.cli.cluster import cluster
from polykey.cli.automation import inject_command, run_command, secrets_env
from polykey.cli.keys import bootstrap, keys
from polykey.cli.nodes import nodes
from polykey.cli.secrets import secrets
from polykey.cli.transfer import secrets_export, secrets_import
from polykey.cli.vaults import vaults
from polykey.cli import sync as _sync  # noqa: F401 - adds the sharing and sync commands to vaults and nodes

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="pk")
@common_options
def cli() -> None:
    """Polykey: a peer-to-peer secret manager for humans and machines.

    Every command accepts --node-path, --password-file and --format, before or
    after the subcommand. Exit codes are listed in docs/cli.md.
    """


cli.add_command(bootstrap)
cli.add_command(keys)
cli.add_command(vaults)
cli.add_command(secrets)
secrets.add_command(secrets_env)
secrets.add_command(secrets_import)
secrets.add_command(secrets_export)
cli.add_command(run_command)
cli.add_command(inject_command)
cli.add_command(agent)
cli.add_command(nodes)
cli.add_command(cluster)


def run(args: list[str]) -> int:
    return run_guarded(lambda: cli.main(args=args, prog_name="pk", standalone_mode=False))
