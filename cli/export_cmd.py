"""`fedtype export`: a run's model as a phone would run it (ONNX, vocabulary,
manifest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.errors import UsageError

EXPORT_HELP = "export a run's model for a phone: ONNX, vocabulary, manifest"
EXPORT_DESCRIPTION = """\
Write the run's model as an ONNX graph that takes the LSTM state as input and
gives it back (one step a token), the tokenizer and vocabulary as JSON, and
manifest.json (the run, the round, the model's shape, the opset, the sha256 of
each file). --int8 ships the weights quantised to int8 (onnxruntime dynamic
quantisation). `fedtype suggest --engine onnx DIR TEXT` runs the result.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand."""
    parser = subparsers.add_parser(
        "export", help=EXPORT_HELP, description=EXPORT_DESCRIPTION
    )
    parser.add_argument("--run", required=True, help="run directory")
    parser.add_argument(
        "--step", type=int, default=None, help="checkpoint step (default: latest)"
    )
    parser.add_argument("--out", required=True, help="export directory to write")
    parser.add_argument(
        "--int8", action="store_true", help="int8 weights (dynamic quantisation)"
    )
    parser.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export the checkpoint and print what was written."""
    from models.export import export_model
    from models.export_manifest import check_out_dir
    from models.rundir import RunDir, RunKind

    run = RunDir(args.run)
    out = Path(args.out)
    if out.resolve() == run.path.resolve():
        raise UsageError(f"--out {out}: is the run directory itself")
    check_out_dir(out)
    kind = run.read_kind()
    model, step = run.load_model(args.step)
    source = {
        "run": str(run.path.resolve()),
        "kind": kind.value,
        "step": step,
        "server_round": step if kind is RunKind.FEDERATED else None,
    }
    manifest = export_model(
        model, run.load_tokenizer(), out, source=source, int8=args.int8
    )
    print(f"exported {args.run} at step {step} ({manifest['precision']}) to {out}")
    for name, entry in manifest["files"].items():
        size = entry["bytes"] / 1e6
        print(f"  {name:<16} {size:8.3f} MB  sha256 {entry['sha256'][:16]}")
    return 0
