"""The ``weightmaps`` command line: a thin click shell over the library.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input (any
:class:`~weightmaps.errors.WeightmapsError`: its message goes to stderr). Logs and progress go to
stderr, results to stdout.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _interrupted_while_starting(signum: int, frame: object) -> None:
    sys.stderr.write("Interrupted.\n")
    os._exit(130)  # nothing was written yet; a traceback from the middle of an import helps no one


# A Ctrl-C while the command line is still importing (click, numpy) ends it quietly; the
# commands' own interrupts are handled by WeightmapsGroup.invoke below.
_starting = threading.current_thread() is threading.main_thread()
_previous_handler = signal.signal(signal.SIGINT, _interrupted_while_starting) if _starting else None

import logging  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from weightmaps import __version__  # noqa: E402
from weightmaps.cli.compute import compute_cmd  # noqa: E402
from weightmaps.cli.info import info_cmd  # noqa: E402
from weightmaps.cli.options import cli_words, configure_logging  # noqa: E402
from weightmaps.cli.preview import preview_cmd  # noqa: E402
from weightmaps.cli.stats import stats_cmd  # noqa: E402
from weightmaps.errors import WeightmapsError  # noqa: E402

if _starting:
    signal.signal(signal.SIGINT, _previous_handler)

__all__ = ["main"]

log = logging.getLogger("weightmaps")

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class WeightmapsGroup(click.Group):
    """Turns library errors into exit codes: WeightmapsError → 2, anything else → 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except WeightmapsError as exc:
            click.echo(f"Error: {cli_words(str(exc))}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except BrokenPipeError:
            # stdout was closed early (`weightmaps info w.zarr | head`): stop quietly. Point stdout
            # at devnull so that the interpreter's final flush does not fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            click.echo("Interrupted; a partly written store can be completed with --resume.", err=True)
            ctx.exit(130)
        except Exception as exc:
            if log.isEnabledFor(logging.DEBUG):
                log.exception("failed")
            click.echo(f"Error: {type(exc).__name__}: {cli_words(str(exc))} (run with -vv for the traceback)", err=True)
            ctx.exit(EXIT_FAILURE)


@click.group(cls=WeightmapsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv: debug).")
@click.option("-q", "--quiet", count=True, help="Less logging on stderr (errors only).")
@click.version_option(__version__, prog_name="weightmaps")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: int) -> None:
    """Pixel-wise loss weights w(x) = φ_c(x) · (1 − exp(−d(x)² / 2σ²)) for segmentation datasets.

    \b
    weightmaps stats masks/                      class counts and weights
    weightmaps compute masks/ --out w.zarr --sigma 2
    weightmaps info w.zarr
    weightmaps preview masks/a.png --sigma 2 --out a.png
    """
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = verbose - quiet
    configure_logging(verbose - quiet)


main.add_command(compute_cmd)
main.add_command(stats_cmd)
main.add_command(info_cmd)
main.add_command(preview_cmd)
