"""Metrics to JSONL (the source of truth) and TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

from tensorboardX import SummaryWriter


class MetricWriter:
  def __init__(self, workdir: Path):
    self.jsonl = open(Path(workdir) / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115 - closed in close()
    self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

  def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
    row = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
    self.jsonl.write(json.dumps(row) + "\n")
    for k, v in metrics.items():
      self.tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def close(self) -> None:
    self.jsonl.close()
    self.tb.close()


def truncate_metrics(workdir: Path, upto: int) -> None:
  """Drop metric rows past the step a resumed run restarts from (a crash can leave rows written after the last
  checkpoint; the resumed run writes them again)."""
  path = Path(workdir) / "metrics.jsonl"
  if path.exists():
    rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= upto]
    path.write_text("".join(r + "\n" for r in rows))


def read_metrics(workdir: Path) -> list[dict]:
  path = Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
