"""The run's loss log: one record per logging interval appended to `log.jsonl` and `log.csv`, trimmed on resume."""

from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path
from typing import Any

from tadsr_cli.base.atomic import atomic_write_path


class RunLogger:
    """Appends one record per logging interval to `log.jsonl` and `log.csv` (fixed columns) in `folder`."""

    def __init__(self, folder: Path, columns: list[str], enabled: bool = True) -> None:
        self.enabled = enabled
        self.columns = list(columns)
        self.jsonl = Path(folder) / "log.jsonl"
        self.csv = Path(folder) / "log.csv"

    def truncate_after(self, step: int) -> None:
        """On resume: drop records of iterations after `step` (they are about to be redone)."""
        if not self.enabled:
            return
        if self.jsonl.is_file():
            keep = []
            for line in self.jsonl.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("step", 0) <= step:
                        keep.append(line)
            with atomic_write_path(self.jsonl) as tmp:
                tmp.write_text("".join(k + "\n" for k in keep))
        if self.csv.is_file():
            with open(self.csv, newline="") as fh:
                rows = list(csv.reader(fh))
            if rows:
                header, body = rows[0], rows[1:]
                si = header.index("step") if "step" in header else 0
                body = [r for r in body if r and r[si].isdigit() and int(r[si]) <= step]
                with atomic_write_path(self.csv) as tmp, open(tmp, "w", newline="") as fh:
                    w = csv.writer(fh)
                    w.writerow(header)
                    w.writerows(body)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        new = not self.csv.is_file() or self.csv.stat().st_size == 0
        with open(self.csv, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(self.columns)
            w.writerow([_fmt(record.get(c, "")) for c in self.columns])


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v
