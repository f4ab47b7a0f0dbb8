"""`neurocodec train` (start or --resume a run), `train export`, `train record-kodak`:
argument wiring for codec.train."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `train` (start or --resume a run) and `train export` to the CLI."""
    p = subparsers.add_parser(
        "train", help="train an image model (resumable), or export a run's weights",
        description="Train a variable-rate image model on a folder of photos. Checkpoints go to "
                    "RUN/checkpoint.pt every few minutes and on SIGTERM/Ctrl-C; --resume continues "
                    "exactly. Multi-process: torchrun --nproc_per_node N -m codec.cli train ...",
        epilog="Example:\n  neurocodec train --run runs/tiny --data ../shared/data/train "
               "--val ../shared/data/kodak\n  neurocodec train export runs/tiny -o weights/mlic-tiny-gaussian.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run folder (checkpoint, config.json, log.csv, val.csv)")
    p.add_argument("--config", help="JSON file of settings (flags given explicitly override it)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run exactly")
    p.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this long")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between checkpoints (default 5)")
    g = p.add_argument_group("settings (saved with the run)")
    from codec.train.loop import SETTINGS

    for key, (default, text) in SETTINGS.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, bool):
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"{text} (default {default})")
        elif isinstance(default, list):
            g.add_argument(flag, type=float, nargs="+", default=None, help=f"{text} (default {default})")
        else:
            kind = type(default) if default is not None else str
            g.add_argument(flag, type=kind, default=None, help=f"{text} (default {default})")
    sub = p.add_subparsers(dest="train_command", metavar="{export,record-kodak}")
    e = sub.add_parser("export", help="write a run's weights as safetensors with their manifest entry")
    e.add_argument("run_dir", help="run folder holding checkpoint.pt")
    e.add_argument("-o", "--output", required=True, help="weights folder (e.g. weights): the release is written there as <preset>@<id>.safetensors, never over an existing file, and becomes the preset's newest in its manifest.json")
    e.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored float type (default float16)")
    e.add_argument("--kodak", metavar="RESULTS_JSON",
                   help="an `eval images` JSON measured with these weights (export, evaluate, export again "
                        "with --kodak: the file is the same): its curve and BD-rate go into the manifest")
    r = sub.add_parser("record-kodak", help="put the Kodak curves of an evaluation of the shipped weights "
                                            "into their manifest entries (after a codec change)")
    r.add_argument("results", metavar="RESULTS_JSON", help="an `eval images` JSON")
    r.add_argument("-w", "--weights", default="weights", help="weights folder holding manifest.json (default weights)")
    p.set_defaults(func=_cmd_train)
    return p


def _cmd_train(args) -> int:
    from codec.train.export import export_weights, record_kodak
    from codec.train.loop import SETTINGS, train

    if args.train_command == "record-kodak":
        print(f"updated the Kodak entries of {', '.join(record_kodak(args.results, args.weights))}")
        return 0
    if args.train_command == "export":
        entry = export_weights(args.run_dir, args.output, args.dtype, args.kodak)
        print(f"wrote release {entry['releases'][0]['release']} to {Path(args.output) / entry['file']} "
              f"({entry['training']['steps']} steps)")
        return 0
    if not args.run:
        raise ValueError("give --run FOLDER (or `train export RUN -o WEIGHTS_DIR`)")
    cfg = {}
    saved = Path(args.run) / "config.json"
    if args.resume and saved.exists():
        cfg.update(json.loads(saved.read_text()))
    if args.config:
        cfg.update(json.loads(Path(args.config).read_text()))
    cfg.update({k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None})
    unknown = set(cfg) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    train(args.run, cfg, resume=args.resume, checkpoint_every_s=args.checkpoint_minutes * 60,
          max_minutes=args.max_minutes)
    return 0
