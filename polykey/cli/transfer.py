"""``pk secrets import`` and ``pk secrets export``: many secrets at once (docs/cli.md).

An import reads the whole input first (polykey.cli.bulk: a .env file, a JSON object or a
directory tree), so a bad line or file stops it before anything is sent; it then goes to the
agent as one ``secrets.import`` request, or as ``secrets.import_stage`` parts plus that request
when it is larger than a frame allows, and the agent writes it as one commit (all or nothing).
An export prints the secrets below VAULT[:DIR] in the formats of ``pk secrets env``, with the
same encoders.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

import click

from polykey.agent_client import split_secret_path
from polykey.cli import bulk, hot, hot_env
from polykey.cli.common import Options, common_options, emit, settings
from polykey.cli.vaults import utf8
from polykey.errors import InvalidInputError
from polykey.vaults.format import split_path

#: Encoded bytes of items per request: well below the agent's 24 MiB frame limit.
CHUNK_BYTES = 8 * 1024 * 1024
EXPORT_FORMATS = ("dotenv", "json", "unix")


class _Progress:
    """One status line on a terminal's stderr, rewritten in place; silent otherwise."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self.shown = False

    def __call__(self, text: str) -> None:
        if self.on:
            sys.stderr.write(f"\r\x1b[Kpk: {text}")
            sys.stderr.flush()
            self.shown = True

    def agent(self, stage: str) -> Any:
        def show(progress: Any) -> None:
            if isinstance(progress, dict) and isinstance(progress.get("elapsed"), (int, float)):
                self(f"{stage} ({progress['elapsed']:.0f} s)")

        return show

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _read_source(source: str, fmt: str, out: bulk.Collector, progress: _Progress) -> str:
    """Parse ``source`` into ``out``; returns the format used."""
    if source == "-":
        if sys.stdin is None:
            raise InvalidInputError("no input: standard input is closed")
        data = bulk.read_limited(sys.stdin.buffer, "standard input")
        fmt = fmt if fmt != "auto" else bulk.guess_format("", data)
        if fmt == "dir":
            raise InvalidInputError("standard input cannot be a directory tree; name the directory")
        name = "<stdin>"
    else:
        try:
            st = os.stat(source)
        except OSError as e:
            raise InvalidInputError(f"cannot read {source}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            if fmt not in ("auto", "dir"):
                raise InvalidInputError(f"{source} is a directory; --from {fmt} reads a file")
            bulk.read_tree(Path(source), out, lambda n: progress(f"reading ({n:,} files)"))
            return "dir"
        if fmt == "dir":
            raise InvalidInputError(f"{source} is not a directory")
        try:
            with open(source, "rb") as f:
                data = bulk.read_limited(f, source)
        except OSError as e:
            raise InvalidInputError(f"cannot read {source}: {e.strerror}") from None
        fmt = fmt if fmt != "auto" else bulk.guess_format(source, data)
        name = source
    progress(f"reading {name}")
    if fmt == "json":
        bulk.parse_json(data, name, out)
    else:
        bulk.parse_dotenv(data, name, out)
    return fmt


def _chunks(items: dict[str, bytes]) -> list[dict[str, bytes]]:
    """Split ``items`` so that each request's encoded size stays under :data:`CHUNK_BYTES`."""
    chunks: list[dict[str, bytes]] = [{}]
    size = 0
    for path, value in items.items():
        cost = 2 * len(path) + 4 * (len(value) + 2) // 3 + 16
        if chunks[-1] and size + cost > CHUNK_BYTES:
            chunks.append({})
            size = 0
        chunks[-1][path] = value
        size += cost
    return chunks


def send_import(s: Options, vault: str, items: dict[str, bytes], progress: _Progress) -> dict[str, Any]:
    """Send ``items`` to the agent, in parts if needed, for one commit. Returns the agent's result."""
    from polykey.cli.vaults import backend

    chunks = _chunks(items)
    with backend(s) as b:
        token = None
        for n, chunk in enumerate(chunks[:-1], 1):
            progress(f"sending part {n} of {len(chunks)}")
            token = b.stage_import(chunk, token, progress.agent("sending"))["token"]
        progress(f"writing {len(items):,} secrets")
        return b.import_secrets(vault, chunks[-1], token, progress.agent(f"writing {len(items):,} secrets"))


@click.command("import")
@click.argument("target", metavar="VAULT[:DIR]", callback=utf8)
@click.argument("source", metavar="FILE|DIR|-")
@click.option("--from", "fmt", type=click.Choice(bulk.FORMATS), default="auto", show_default=True,
              help="The input's format: a .env file, a JSON object, or a directory tree (auto: a directory is "
                   "a tree, a .json name or input starting with '{' is JSON, anything else .env).")
@click.option("--env-invalid", "invalid", type=click.Choice(hot.ENV_INVALID), default="error", show_default=True,
              help="A name that cannot be a secret (or, in a .env file, a variable) name: fail, warn and skip, or skip.")
@click.option("--env-duplicate", "duplicate", type=click.Choice(hot.ENV_DUPLICATE), default="error",
              show_default=True, help="A name given twice: keep the first, the last, the last with a warning, or fail.")
@common_options
def secrets_import(target: str, source: str, fmt: str, invalid: str, duplicate: str) -> None:
    """Import many secrets into VAULT[:DIR] as one commit, from FILE, DIR or standard input (-).

    A .env file gives one secret per NAME=VALUE; a JSON object one per key (nested objects are
    directories, strings, numbers and booleans are values); a directory tree one per regular file
    (its relative path, its bytes; links and special files are refused). Existing secrets of the
    same path are replaced. Everything is read and checked first: on any error nothing is
    imported. At most 100,000 secrets and 64 MiB.
    """
    s = settings()
    vault, directory = split_secret_path(target, need_path=False)
    prefix = split_path(directory, allow_root=True)
    progress = _Progress()
    try:
        out = bulk.Collector(invalid, duplicate)
        used = _read_source(source, fmt, out, progress)
        out.check_shape(prefix)
        if not out.items:
            raise InvalidInputError(f"nothing to import from {source if source != '-' else 'standard input'}")
        items = {"/".join(prefix + tuple(p.split("/"))): v for p, (v, _w) in out.items.items()}
        result = send_import(s, vault, items, progress)
    finally:
        progress.done()
    created = int(result.get("created", 0))
    where = f"{vault}:{'/'.join(prefix)}" if prefix else vault
    summary = {"vault": vault, "path": "/".join(prefix), "format": used, "count": len(items), "created": created,
               "updated": len(items) - created, "skipped": out.skipped, "commit": result["commit"]}
    skipped = f"; {out.skipped} skipped" if out.skipped else ""
    noun = "secret" if len(items) == 1 else "secrets"
    emit(s, f"Imported {len(items):,} {noun} into {where} ({created:,} new, {len(items) - created:,} replaced"
            f"{skipped}) in one commit {result['commit'][:12]}.", summary)


@click.command("export")
@click.argument("target", metavar="VAULT[:DIR]", callback=utf8)
@click.option("--env-format", type=click.Choice(EXPORT_FORMATS), default=None,
              help="dotenv (NAME='value' lines, the default), unix (export lines for sh) or json (an object by "
                   "path below DIR; the default with --format json).")
@click.option("--env-invalid", "invalid", type=click.Choice(hot.ENV_INVALID), default="error", show_default=True,
              help="dotenv/unix: a secret name that is not a valid variable name: fail, warn and skip, or skip.")
@click.option("--env-duplicate", "duplicate", type=click.Choice(hot.ENV_DUPLICATE), default="error",
              show_default=True, help="dotenv/unix: two secrets with the same last name: keep the first, the last, "
                                      "the last with a warning, or fail.")
@common_options
def secrets_export(target: str, env_format: str | None, invalid: str, duplicate: str) -> None:
    """Print every secret below VAULT[:DIR], values included, for `pk secrets import` or a program.

    dotenv and unix name each secret by its last path component (as `pk secrets env`); json keys
    are paths below DIR, so `pk secrets import VAULT:DIR FILE` reads the export back exactly.
    """
    s = settings()
    opts = s
    env_format = env_format or ("json" if s.json else "dotenv")
    if env_format == "json":
        vault, directory = split_secret_path(target, need_path=False)
        base = "/".join(split_path(directory, allow_root=True))
        with opts.session() as sess:
            resolved = sess.call("secrets.resolve", {"refs": [{"vault": vault, "path": directory}]})
        env = {}
        for item in resolved[0]["secrets"]:
            path = str(item["path"]).strip("/")
            if path == base:  # DIR named a secret: just that one, by its name
                path = path.rsplit("/", 1)[-1]
            elif base:
                path = path[len(base) + 1:]
            env[path] = item["value"]
    else:
        env = hot_env.collect_env(opts, [target], invalid, duplicate)
    sys.stdout.write(hot_env.format_env(env, env_format))
    sys.stdout.flush()
