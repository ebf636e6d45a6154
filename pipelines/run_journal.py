"""Every run's `sync_runs` row, kept in the deployment even when the warehouse cannot take it.

A run that fails on a locked destination, is interrupted, or fails before its load reaches the
warehouse leaves no row there, and the published copy readers (and `status`) see is only
replaced after a success: `status` would say "fresh" while runs fail. So each run writes its row
here first, one JSON line in the deployment's pipelines folder, and `status` reads the last
runs from here. The next run that reaches the warehouse merges the journal's rows into
`sync_runs` (keyed on `run_id`, so rewriting a row is harmless), and the table holds every run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

# Enough for days of runs every few minutes, small enough to read whole on every `status`.
KEEP_RUNS = 500


class RunJournal:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def beside(cls, pipelines_dir: str, pipeline_name: str) -> RunJournal:
        # Beside dlt's working folder, not in it: dlt may wipe that folder (a new pipeline, a
        # `dlt pipeline drop`), and the runs it had are still the deployment's history.
        return cls(Path(pipelines_dir) / f"{pipeline_name}.runs.jsonl")

    def append(self, row: dict[str, Any]) -> None:
        """Add one run; a journal that cannot be written is not a reason to lose the run."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, default=_plain, sort_keys=True)
        with self.path.open("a", encoding="utf-8") as journal:
            journal.write(line + "\n")
            journal.flush()
            os.fsync(journal.fileno())
        self._trim()

    def runs(self) -> list[dict[str, Any]]:
        """All runs kept, oldest first; a line torn by a crash mid-write is skipped."""
        if not self.path.exists():
            return []
        runs = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("run_id"):
                runs.append(row)
        return runs

    def _trim(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        if len(lines) <= KEEP_RUNS * 2:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("\n".join(lines[-KEEP_RUNS:]) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
