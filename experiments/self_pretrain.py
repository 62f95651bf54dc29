"""Self-pretraining (Amos, Berant & Gupta, "Never Train from Scratch", ICLR 2024, arXiv:2310.02980).

MLM on the task's OWN training inputs (no extra data; research/data/tasks/mlm.py `self_task`), then fine-tune
on the task, against the same model trained from scratch. `task=listops|text_cls|wic` picks the task (its tiny
config from experiments/<task>.py; other overrides such as data.*, model.*, train.* apply to that task config
and so to both stages), `stage=` the step (`mask_rate=` sets the MLM masking rate):

  pretrain  MLM (15% BERT masking) on the task's train-split inputs, same model and step budget as the task;
            rows have the task's length, so the position table transfers.
  scratch   exactly experiments/<task>.py (with the same overrides): the from-scratch baseline.
  finetune  the task, encoder initialised from `pretrained` (train.init_from; {variant} and {seed} are filled
            per run, so each variant and seed starts from its own pretraining run).

Launch (CPU, tiny), two commands per task:
  research compare --config experiments/self_pretrain.py:task=listops,stage=pretrain \
    --variants softmax,linear,performer --seeds 2 --workdir runs/self_pretrain/listops-pretrain --name sp_mlm
  research compare --config experiments/self_pretrain.py:task=listops --set stage=scratch --set stage=finetune \
    --variants softmax,linear,performer --seeds 2 --workdir runs/self_pretrain/listops --name self_pretrain_listops
(task=text_cls likewise, with text_cls in the paths). One table and figure of several such sweeps:
  research report runs/none --out results --name self_pretrain --include results/self_pretrain_listops.json \
    --include results/self_pretrain_text_cls.json --include results/self_pretrain_text_cls_2k.json:mlm_steps=2000
`size=paper` (accelerator) starts from LRA's released config of the task (experiments/lra.py:size=paper; the
paper's own setting) for listops and text_cls and from experiments/wic.py:size=paper for wic; `size=lra` uses
the task config's LRA-length preset.
Measured (CPU, 2 seeds, results/self_pretrain.md): no gain beyond seed noise at this size. ListOps 24.5-25.3% with
or without MLM; Text (512 bytes) softmax/linear/performer 54.5/51.7/51.7 from scratch, 51.1/50.8/52.5 after a
400-step MLM, 54.7/53.6/55.3 after a 2,000-step MLM (standard error of 179 test documents ~3.7 points).
"""

from pathlib import Path

import ml_collections

from research.config import ALIASES, apply_overrides, base_config, load_config, parse_overrides

TASKS = ("listops", "text_cls", "wic")
STAGES = ("pretrain", "finetune", "scratch")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  overrides = parse_overrides(arg)
  task = overrides.pop("task", "listops")
  stage = overrides.pop("stage", "finetune")
  size = overrides.pop("size", "tiny")
  pretrained = overrides.pop("pretrained", f"runs/self_pretrain/{task}-pretrain/{{variant}}-seed{{seed}}")
  if task not in TASKS:
    raise ValueError(f"unknown self-pretraining task {task!r}; choose one of {', '.join(TASKS)}")
  if stage not in STAGES:
    raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
  mask_rate = overrides.pop("mask_rate", 0.15)
  # every other override (data.*, model.*, train.*) is about the TASK config, so both stages share the model
  here = Path(__file__).parent
  base = (
    f"{here / 'lra.py'}:task={task},size=paper"
    if size == "paper" and task != "wic"
    else f"{here / task}.py:size={size}"
  )
  c = apply_overrides(load_config(base), overrides, ALIASES)
  seq_len = {
    "listops": lambda: c.data.max_length + 1,
    "text_cls": lambda: c.data.max_bytes + 1,  # CLS + inputs
    "wic": lambda: c.data.max_len,
  }[task]()  # the task's rows
  if stage == "finetune":
    c.train.init_from = pretrained
  elif stage == "pretrain":
    p = base_config(
      "mlm",
      data=dict(
        self_task=task, self_task_cfg=tuple(sorted(c.data.to_dict().items())), seq_len=seq_len, mask_rate=mask_rate
      ),
    )
    p.seed, p.model, p.mesh = c.seed, c.model, c.mesh
    p.model.max_len = seq_len  # the task's position table (its max_len 0 means: the task's row length)
    p.train.update({k: v for k, v in c.train.items() if k not in ("best_metric", "best_mode")})
    c = p
  return c
