"""Entry point of the `mugv` command: one sub-command per module, wired explicitly."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import warnings
from collections.abc import Sequence

DISTRIBUTIONS = (
    "mugv-apps",
    "mugv-data",
    "mugv-vae",
    "mugv-dit",
    "mugv-infra",
    "mugv-captioning",
    "mugv-retrieval",
)

# Sub-command modules: each exposes `add_parser(subparsers)` and sets `func` on its parser.
COMMANDS: tuple[str, ...] = (
    "demo",
    "curate",
    "train_vae",
    "encode",
    "train_dit",
    "generate",
    "enhance",
    "evaluate",
    "label",
    "caption",
    "retrieve",
)


def installed_versions() -> dict[str, str | None]:
    """Version of every MUG-V distribution, None for those not installed."""
    versions: dict[str, str | None] = {}
    for name in DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print every package's version")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        for name, version in installed_versions().items():
            print(f"{name:<16} {version or 'not installed'}")
        parser.exit()


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mugv",
        description="MUG-V: curate video data, train the video VAE and MUGDiT, generate and "
        "evaluate videos, caption scene graphs (TSG) and retrieve videos (TW-BERT).",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for module_name in commands:
        module = importlib.import_module(f"mugv.apps.{module_name}")
        module.add_parser(subparsers)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'the input or config is wrong': printed, not traced."""
    from mugv.apps._config import AppError
    from mugv.captioning import CaptioningError
    from mugv.data import DataError
    from mugv.dit import DiTError
    from mugv.dit.pipeline import PipelineError
    from mugv.infra import InfraError
    from mugv.retrieval import RetrievalError
    from mugv.vae import VAEError

    return (
        AppError,
        CaptioningError,
        DataError,
        DiTError,
        InfraError,
        PipelineError,
        RetrievalError,
        VAEError,
    )


def main(argv: Sequence[str] | None = None, commands: Sequence[str] = COMMANDS) -> int:
    """Run ``mugv``; ``commands`` narrows the sub-commands (tests of one module use it)."""
    # Megatron-Core warns about absent CUDA kernels and its own deprecations: noise on a CLI.
    warnings.filterwarnings("ignore", module=r"megatron\.")
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        print(f"mugv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
