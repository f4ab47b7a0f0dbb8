"""Add the codecs of a later `eval images` run (e.g. a new weights release) to a results file,
instead of re-running every codec: the curves, the CSV rows, the BD table against the file's
anchor, an "added" record with the date and the command that measured them, and the RD plot.

    python benchmarks/add_results.py docs/results/kodak.json /tmp/kodak_gg.json \
        --command "neurocodec eval images ../shared/data/kodak --codecs neurocodec:mlic-medium-gg ..." \
        --plot docs/results/kodak_rd.png

The CSV beside each results file (same name, .csv) gets the new rows. Both runs must be on the
same images (their sha256 are compared); a codec the file already has is refused.
"""
import argparse
import csv
import datetime
import json
from pathlib import Path

from codec.eval.bd import bd_table
from codec.eval.plot import plot_rd
from codec.eval.report import load_reference, write_json


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
    args = p.parse_args()
    print(f"added {', '.join(add(args.base, args.new, args.command, args.plot))} to {args.base}")


if __name__ == "__main__":
    main()
