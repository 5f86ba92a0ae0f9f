"""Character-level language modelling, the second Task: random context windows of a text file, next-character
cross-entropy; the metric is the negative validation loss (nats per character), so higher is better."""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor
from torch.nn import functional as F

from esper.leyline.registry import TaskConfig
from esper.tolaria.data import DataError
from esper.tolaria.task import register_task


class TextDataConfig(TaskConfig):
    """Next-character prediction on a text file (esper.tolaria.text_task): nanoGPT's character-level setting."""

    task: Literal["char_lm"] = "char_lm"
    """Task family."""
    metric_name: ClassVar[str] = "neg_loss"  # −(validation loss, nats per character): higher is better
    source: str
    """A UTF-8 text file (e.g. ../shared/data/tinyshakespeare/input.txt); its distinct characters are the vocabulary."""
    limit: int | None = Field(None, ge=100)
    """Characters used from the start of the file; None = all."""
    val_fraction: float = Field(0.1, gt=0, lt=1)
    """The last fraction of the text is validation (nanoGPT's split: 0.1)."""
    block_size: int = Field(64, ge=2)
    """Context length T of every window (at most the host's block_size)."""
    val_windows: int = Field(200, ge=1)
    """Fixed validation windows, evenly spaced over the validation text (the same for every run)."""

    @field_validator("source")
    @classmethod
    def _absolute(cls, value: str) -> str:
        """Made absolute where the config is read (Ray workers and Tune trials run in other directories)."""
        return str(Path(value).resolve())


EVAL_BATCH = 64  # validation windows per batch


def read_text(path: str | Path, limit: int | None = None) -> str:
    """The file's text (its first `limit` characters); a DataError names what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"text file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    text = text[:limit] if limit else text
    if len(set(text)) < 2:
        raise DataError(f"{p}: a character model needs at least 2 distinct characters")
    return text


class Windows:
    """Random (B, T) windows of `ids` and their next characters; each `iter()` is one pass of `batches` batches,
    drawn from a generator seeded once (so passes differ, and the whole stream is fixed by the seed)."""

    def __init__(self, ids: Tensor, block_size: int, batch_size: int, seed: int) -> None:
        if len(ids) <= block_size:
            raise DataError(f"the training text ({len(ids)} characters) is not longer than a window ({block_size})")
        self.ids, self.block_size, self.batch_size = ids, block_size, batch_size
        self.batches = max(len(ids) // (batch_size * block_size), 1)  # one pass ≈ the text's characters once
        self.gen = torch.Generator(device=ids.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        t = self.block_size
        for _ in range(self.batches):
            starts = torch.randint(len(self.ids) - t, (self.batch_size,), generator=self.gen, device=self.ids.device)
            offsets = starts[:, None] + torch.arange(t + 1, device=self.ids.device)  # (B, T + 1)
            chunk = self.ids[offsets]
            yield chunk[:, :-1], chunk[:, 1:]


class CharLanguageModel:
    """Next-character prediction. Loss: cross-entropy per character; metric: −(validation loss), nats/char."""

    name = "char_lm"
    metric_name = TextDataConfig.metric_name

    def __init__(self, text: str, config: TextDataConfig, device: torch.device, val_windows: int | None = None) -> None:
        self.vocab = sorted(set(text))
        self.output_size = len(self.vocab)
        self.chance_loss = math.log(self.output_size)
        index = {c: i for i, c in enumerate(self.vocab)}
        ids = torch.tensor([index[c] for c in text], dtype=torch.long, device=device)
        cut = int(len(ids) * (1 - config.val_fraction))
        self.train_ids, self.val_ids = ids[:cut], ids[cut:]
        self.block_size = config.block_size
        self.val_batches = self._fixed_windows(min(config.val_windows, val_windows or config.val_windows))
        self.eval_batches = None

    def _fixed_windows(self, n: int) -> list[tuple[Tensor, Tensor]]:
        """`n` windows evenly spaced over the validation text: every run is judged on the same characters."""
        t = self.block_size
        if len(self.val_ids) <= t:
            raise DataError(f"the validation text ({len(self.val_ids)} characters) is not longer than a window ({t})")
        starts = torch.linspace(0, len(self.val_ids) - t - 1, n, device=self.val_ids.device).long()
        chunk = self.val_ids[starts[:, None] + torch.arange(t + 1, device=starts.device)]  # (n, T + 1)
        return [(chunk[i:i + EVAL_BATCH, :-1], chunk[i:i + EVAL_BATCH, 1:]) for i in range(0, n, EVAL_BATCH)]

    def train_stream(self, batch_size: int, augment: bool, seed: int) -> Windows:
        return Windows(self.train_ids, self.block_size, batch_size, seed)

    def loss(self, output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        return F.cross_entropy(output.flatten(0, 1), target.flatten(), reduction=reduction)  # (B, T, V) → (B·T, V)

    def metric_sums(self, outputs: Tensor, target: Tensor) -> Tensor:
        k = outputs.shape[0]
        nll = F.cross_entropy(outputs.flatten(0, 2), target.repeat(k, 1).flatten(), reduction="none")  # (K·B·T,)
        return -nll.view(k, -1).sum(dim=1).float().cpu()  # (K,): −Σ loss per configuration

    def count(self, target: Tensor) -> int:
        return target.numel()

    def nominal_input(self) -> Tensor:
        return torch.zeros((1, self.block_size), dtype=torch.long, device=self.train_ids.device)

    def decode(self, ids: Tensor) -> str:
        return "".join(self.vocab[i] for i in ids.tolist())

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, n_chars: int = 300, seed: int = 0, temperature: float = 0.8) -> str:
        """`n_chars` characters sampled from `model` after a newline (its own generator: no global RNG drawn)."""
        device = self.train_ids.device
        gen = torch.Generator(device=device).manual_seed(seed)
        ids = torch.tensor([[self.vocab.index("\n") if "\n" in self.vocab else 0]], device=device)
        was_training = model.training
        model.eval()
        for _ in range(n_chars):
            logits = model(ids[:, -self.block_size:])[:, -1] / temperature  # (1, T, V) → (1, V)
            ids = torch.cat([ids, torch.multinomial(logits.softmax(-1), 1, generator=gen)], dim=1)
        model.train(was_training)
        return self.decode(ids[0, 1:])


def build_text_task(config: TextDataConfig, device: torch.device, val_examples: int | None) -> CharLanguageModel:
    return CharLanguageModel(read_text(config.source, config.limit), config, device, val_examples)


def check_text_data(config: TextDataConfig) -> None:
    try:
        read_text(config.source, config.limit)
    except DataError as exc:
        raise DataError(f"data.source: {exc}") from None


register_task(TextDataConfig, build_text_task, check_text_data)
