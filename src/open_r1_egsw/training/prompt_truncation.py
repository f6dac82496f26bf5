"""open-r1's `max_prompt_length` on TRL 1.16: keep the last N tokens of each chat-templated prompt, in the ids that
feed both generation and the loss. `EGSWTrainer` takes this mixin first in its bases.
"""

from __future__ import annotations


class PromptTruncationMixin:
    """Left-truncate the prompt ids of `_tokenize_prompts` to `args.max_prompt_length` tokens (None: keep all)."""

    def _tokenize_prompts(self, prompts: list):
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        limit = getattr(self.args, "max_prompt_length", None)
        if limit is not None:
            prompt_ids = [list(ids)[-limit:] for ids in prompt_ids]
        return prompt_ids, images, multimodal_fields
