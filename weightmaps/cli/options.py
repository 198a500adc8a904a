"""Options and parameter types shared by the commands (defined once, like rasterio's ``rio``)."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from weightmaps.backend import DEVICES
from weightmaps.params import INSTANCE_MODES, MAP_KINDS, UNET_FIELDS
from weightmaps.validation import MAX_LABEL, MIN_TOLERANCE

F = TypeVar("F", bound=Callable[..., Any])


def _parse_spacing(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | float | None:
    """``2.5,1,1`` (per axis) or one number for every axis, as the Python API takes."""
    if value is None:
        return None
    try:
        spacing = tuple(float(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, like 2.5,1,1; got {value!r}") from None
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise click.BadParameter(f"spacing values must be finite numbers > 0, got {value!r}")
    return spacing[0] if len(spacing) == 1 else spacing


def _parse_label_map(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[int, int] | None:
    if not value:
        return None
    mapping: dict[int, int] = {}
    for item in value.split(","):
        try:
            src, dst = (int(v) for v in item.split(":"))
        except ValueError:
            raise click.BadParameter(f"expected SRC:DST pairs separated by commas, like 255:1; got {item!r}") from None
        if src in mapping:
            raise click.BadParameter(f"label {src} is mapped twice ({src}:{mapping[src]} and {item})")
        mapping[src] = dst
    return mapping


ignore_index_opt = click.option(
    "--ignore-index", type=click.IntRange(0, MAX_LABEL), default=None, metavar="N",
    help="Label that gets weight 0 and is left out of the class counts (e.g. 255).",
)
label_map_opt = click.option(
    "--label-map", callback=_parse_label_map, default=None, metavar="SRC:DST,...",
    help="Replace labels when reading, e.g. 255:1 for 0/255 binary masks.",
)
float_labels_opt = click.option(
    "--float-labels", is_flag=True,
    help="Accept float masks (NIfTI from imaging tools) whose values are all whole numbers.",
)
spacing_opt = click.option(
    "--spacing", callback=_parse_spacing, default=None, metavar="Z,Y,X",
    help="Pixel spacing per array axis, or one number for all (default: the NIfTI header's, else 1).",
)
connectivity_opt = click.option(
    "--connectivity", type=click.IntRange(1, 3), default=1, show_default=True,
    help="Neighbourhood that defines label edges: 1 = faces, up to the number of axes = all neighbours.",
)
sigma_opt = click.option(
    "--sigma", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Width of the edge uncertainty (--map unet: of the separation term), in spacing units (pixels by "
    "default). Required by the weight maps, bressan and unet; distance and sdf take none.",
)
class_weights_opt = click.option(
    "--class-weights", default="balanced", show_default=True, metavar="SCHEME|FILE",
    help="balanced, median, log, effective or none over the dataset's class counts, "
    "or a JSON file {label: weight}.",
)
device_opt = click.option(
    "--device", type=click.Choice(DEVICES), default="auto", show_default=True,
    help="auto takes the GPU when CuPy and cuCIM find one; scipy is the slow reference.",
)

_MAP_OPTIONS = (
    click.option(
        "--map", "kind", type=click.Choice(MAP_KINDS), default="bressan", show_default=True,
        help="bressan: φ_c·δ (Bressan et al. 2021); unet: w_c + w0·exp(−(d1+d2)²/2σ²), the U-Net weights "
        "that separate touching instances (Ronneberger et al. 2015); distance: d to the nearest edge, "
        "weights derived when loading with any σ and φ; sdf: a signed distance map per class "
        "(needs --num-classes), for boundary losses.",
    ),
    click.option(
        "--w0", type=click.FloatRange(min=0), default=None, metavar="W",
        help=f"With --map unet: height of the separation term [default: {UNET_FIELDS['w0']:g}].",
    ),
    click.option(
        "--tolerance", type=click.FloatRange(MIN_TOLERANCE, 1, max_open=True), default=None, metavar="T",
        help=f"With --map unet: every weight is exact to T·w0 [default: {UNET_FIELDS['tolerance']:g}].",
    ),
    click.option(
        "--instances", type=click.Choice(INSTANCE_MODES), default=None,
        help="With --map unet: as-is, the masks are instance masks (0 background, every other value one "
        "instance); connected, the connected components of every class of semantic masks "
        f"[default: {UNET_FIELDS['instances']}].",
    ),
)


def map_opts(f: F) -> F:
    """--map and the options of the U-Net map (compute and preview)."""
    for option in reversed(_MAP_OPTIONS):
        f = option(f)
    return f


json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _parse_storage_options(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs → fsspec storage options. VALUE is read as JSON where it is JSON
    (``anon=true``, ``default_block_size=1048576``), else kept as text; a dotted KEY nests
    (``client_kwargs.region_name=eu-west-1``)."""
    options: dict[str, Any] = {}
    for item in value:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE, e.g. endpoint_url=http://127.0.0.1:9000")
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        *parents, leaf = key.split(".")
        node = options
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise click.BadParameter(f"{item!r}: {part!r} is given both as a value and as a group")
            node = child
        node[leaf] = parsed
    return options


storage_options_opt = click.option(
    "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE", callback=_parse_storage_options,
    help="For s3://, gs://, az:// ... inputs and stores: an fsspec storage option (repeatable), e.g. "
    "endpoint_url=http://127.0.0.1:9000 or anon=true. Credentials otherwise come the fsspec way "
    "(environment, config files).",
)


# Library messages name an option the library's way and the command line's: `skip_bad=True
# (--skip-bad)`, `max_weight (--max-weight)`. The CLI keeps the flag alone: a CLI user types flags.
_BOTH_SPELLINGS = re.compile(r"\b\w+=?\w* \((--[a-z][\w-]*)\)")


def cli_words(message: str) -> str:
    """A library message as a command-line user reads it.

    Examples
    --------
    >>> cli_words("skip them with skip_bad=True (--skip-bad); or cap them with max_weight (--max-weight)")
    'skip them with --skip-bad; or cap them with --max-weight'
    """
    return _BOTH_SPELLINGS.sub(r"\1", message)


def shape_lines(summary: dict[str, Any]) -> list[str]:
    """A shape summary (weightmaps.layout.summarize_shapes) in a few lines, whatever the count."""
    if summary["distinct"] == 1:
        only = summary["most_common"][0]
        return [f"shape {tuple(only['shape'])}: {only['n_samples']} maps"]
    lines = [f"{summary['distinct']} distinct shapes over {summary['n_samples']} maps"]
    if "min" in summary:
        lines.append(f"  per axis: min {tuple(summary['min'])}, median {tuple(summary['median'])}, "
                     f"max {tuple(summary['max'])}")
    common = ", ".join(f"{tuple(c['shape'])} × {c['n_samples']}" for c in summary["most_common"])
    lines.append(f"  most common: {common}")
    return lines


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


class ClickEchoHandler(logging.Handler):
    """Log records to stderr through click, looked up at each record (so CliRunner captures it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def configure_logging(verbosity: int) -> None:
    """-q: errors only; default: warnings; -v: info; -vv: debug. Logs go to stderr."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(max(-1, min(verbosity, 2)), logging.DEBUG)
    logger = logging.getLogger("weightmaps")
    for handler in list(logger.handlers):
        if isinstance(handler, ClickEchoHandler):
            logger.removeHandler(handler)
    handler = ClickEchoHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


def _adjust_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value:
        root = ctx.find_root()
        root.ensure_object(dict)
        sign = 1 if param.name == "verbose" else -1
        root.obj["verbosity"] = root.obj.get("verbosity", 0) + sign * value
        configure_logging(root.obj["verbosity"])
    return value


def verbosity_opts(f: F) -> F:
    """``-v/-q`` after the command name too (``weightmaps compute ... -v``)."""
    f = click.option("-q", "--quiet", count=True, expose_value=False, callback=_adjust_verbosity,
                     help="Less logging on stderr.")(f)
    f = click.option("-v", "--verbose", count=True, expose_value=False, callback=_adjust_verbosity,
                     help="More logging on stderr (-vv: debug).")(f)
    return f


class ProgressBars:
    """The library's ``progress(stage, done, total)`` callback drawn as one tqdm bar per stage."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            from tqdm import tqdm

            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, initial=done, desc=stage, unit="mask", file=sys.stderr,
                            dynamic_ncols=True, smoothing=0.1)
            return
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def human_bytes(n: float) -> str:
    """A byte count for people: 1.5 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover
