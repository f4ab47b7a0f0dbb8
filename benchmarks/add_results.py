"""Add the codecs of a later `eval images` run (e.g. a new weights release) to a results file,
instead of re-running every codec: the curves, the CSV rows, the BD table against the file's
anchor, an "added" record with the date and the command that measured them, and the RD plot.

    python benchmarks/add_results.py docs/results/kodak.json /tmp/kodak_gg.json \
        --command "neurocodec eval images ../shared/data/kodak --codecs neurocodec:mlic-medium-gg ..." \
        --plot docs/results/kodak_rd.png

The CSV beside each results file (same name, .csv) gets the new rows. Both runs must be on the
same images (their sha256 are compared); a codec the file already has is refused. A newer
release of a model the file has: first pin the older curve to its release, `--rename
neurocodec:M=neurocodec:M@ID`, so that `neurocodec:M` names the newest, as the codec does.
"""
import argparse
import csv
import datetime
import json
from pathlib import Path

from codec.eval.bd import bd_table
from codec.eval.plot import plot_rd
from codec.eval.report import load_reference, write_json


def rename(base_path: Path, old: str, new: str) -> None:
    """Rename codec `old` of a results file (its curve, BD rows, 'added' records and CSV rows)."""
    base = json.loads(base_path.read_text())
    if old not in {c["name"] for c in base["codecs"]} or new in {c["name"] for c in base["codecs"]}:
        raise SystemExit(f"{base_path} must have {old!r} and not {new!r}")
    for c in base["codecs"]:
        c["name"] = new if c["name"] == old else c["name"]
    for record in base.get("added", []):
        record["codec"] = new if record["codec"] == old else record["codec"]
    base["bd"] = bd_table(base["codecs"], base["bd"]["anchor"], load_reference(base["reference"]).get("curves"))
    write_json(base_path, base)
    path = base_path.with_suffix(".csv")
    rows = list(csv.DictReader(path.open()))
    fields = next(csv.reader(path.open()))
    for r in rows:
        r["codec"] = new if r["codec"] == old else r["codec"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def add(base_path: Path, new_path: Path, command: str, plot: Path | None = None) -> list[str]:
    base, new = json.loads(base_path.read_text()), json.loads(new_path.read_text())
    if [i["sha256"] for i in base["images"]] != [i["sha256"] for i in new["images"]]:
        raise SystemExit(f"{new_path} was measured on other images than {base_path}")
    have, anchor = {c["name"] for c in base["codecs"]}, base["bd"]["anchor"]
    added = [c for c in new["codecs"] if not (c["name"] == anchor and anchor in have)]  # the anchor, run again
    if clash := [c["name"] for c in added if c["name"] in have]:
        raise SystemExit(f"{base_path} already has {', '.join(clash)}")
    base["codecs"] += added
    references = load_reference(base["reference"]).get("curves")
    base["bd"] = bd_table(base["codecs"], anchor, references)
    if plot:
        plot_rd(base["codecs"], plot, title=f"{base['dataset']}: rate-distortion", references=references)
    today = datetime.date.today().isoformat()
    base.setdefault("added", []).extend({"codec": c["name"], "date": today, "command": command} for c in added)
    write_json(base_path, base)
    names = {c["name"] for c in added}
    base_csv, new_csv = base_path.with_suffix(".csv"), new_path.with_suffix(".csv")
    rows = [r for r in csv.DictReader(new_csv.open()) if r["codec"] in names]
    with base_csv.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=next(csv.reader(base_csv.open()))).writerows(rows)
    return sorted(names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("base", type=Path, help="results JSON to extend (its CSV beside it)")
    p.add_argument("new", type=Path, help="results JSON of the later run (its CSV beside it)")
    p.add_argument("--command", required=True, help="the command that measured NEW, recorded in 'added'")
    p.add_argument("--plot", type=Path, help="redraw the RD plot of every codec of BASE here")
    p.add_argument("--rename", metavar="OLD=NEW", action="append", default=[],
                   help="first rename codec OLD of BASE to NEW (e.g. pin an older release's curve to its ID)")
    args = p.parse_args()
    for spec in args.rename:
        old, sep, new = spec.partition("=")
        if not sep:
            raise SystemExit(f"--rename takes OLD=NEW, not {spec!r}")
        rename(args.base, old, new)
    print(f"added {', '.join(add(args.base, args.new, args.command, args.plot))} to {args.base}")


if __name__ == "__main__":
    main()
