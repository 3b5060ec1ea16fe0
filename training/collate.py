"""Batches for LoRA training: prompt (with its video tokens) + answer, labels only on the answer.

The prompt goes through the model's own processor (chat format, video placeholder expanded to the
vision tokens, pixel values); the answer is tokenized on its own and appended with EOS. Tokenizing the
two apart keeps the boundary exact, so the loss never sees prompt or video tokens.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from v2t_foley.foley_core.backends.base import GenerationRequest
from v2t_foley.foley_core.backends.transformers_backend import TransformersVideoLLM
from v2t_foley.foley_core.video import open_video
from v2t_foley.foley_core.video.reader import Frames
from v2t_foley.foley_core.video.sampling import frame_at
from v2t_foley.training.data import SFTExample

IGNORE = -100


@lru_cache(maxsize=64)
def _frames(video: str, times: tuple[float, ...], max_side: int | None) -> Frames:
    opened = open_video(video, max_side=max_side)
    return opened.frames([frame_at(opened.frame_times, t) for t in times])


class SFTCollator:
    def __init__(self, llm: TransformersVideoLLM, max_side: int | None = 512) -> None:
        self.llm = llm
        self.max_side = max_side
        self.tokenizer = llm.tokenizer

    def __call__(self, examples: list[SFTExample]) -> dict[str, torch.Tensor]:
        requests = [
            GenerationRequest(_frames(e.video, e.frame_times, self.max_side), e.prompt) for e in examples
        ]
        return self.batch(requests, [e.target for e in examples])

    def batch(self, requests: list[GenerationRequest], targets: list[str]) -> dict[str, torch.Tensor]:
        """Right-padded input_ids / attention_mask / labels plus the processor's vision inputs."""
        prompts = self.llm.encode(requests)
        rows, labels = [], []
        for k, target in enumerate(targets):
            prompt_ids = prompts["input_ids"][k][prompts["attention_mask"][k].bool()]
            answer = self.tokenizer(target, add_special_tokens=False)["input_ids"]
            answer_ids = torch.tensor([*answer, self.tokenizer.eos_token_id], dtype=torch.long)
            rows.append(torch.cat([prompt_ids, answer_ids]))
            labels.append(torch.cat([torch.full_like(prompt_ids, IGNORE), answer_ids]))
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        batch = {
            "input_ids": torch.stack(
                [torch.nn.functional.pad(r, (0, width - len(r)), value=pad) for r in rows]
            ),
            "attention_mask": torch.stack(
                [torch.nn.functional.pad(torch.ones_like(r), (0, width - len(r)), value=0) for r in rows]
            ),
            "labels": torch.stack(
                [torch.nn.functional.pad(r, (0, width - len(r)), value=IGNORE) for r in labels]
            ),
        }
        for key, value in prompts.items():
            if key in ("input_ids", "attention_mask"):
                continue
            if torch.is_tensor(value) and value.shape == prompts["input_ids"].shape:
                # per-token inputs (Qwen's mm_token_type_ids): the prompt's values, zeros for the answer
                masks = prompts["attention_mask"].bool()
                value = torch.stack(
                    [
                        torch.nn.functional.pad(value[k][masks[k]], (0, width - int(masks[k].sum())), value=0)
                        for k in range(len(rows))
                    ]
                )
            batch[key] = value  # pixel values and the model's other vision inputs
        return batch
