"""How chat messages become prompt text and token ids: one layout for generation and training."""

from __future__ import annotations

from typing import Any

# The layout for tokenizers without a chat template of their own. gemma-3-270m is a BASE
# model: it never saw Gemma's <start_of_turn> markers in training, and with them it echoes
# the question and drifts into noise. A "User:/Assistant:" transcript is common in web text,
# so the base model continues it with an answer. Training (trace_builder/train) installs this
# same template on such tokenizers, so a model trained here is prompted at inference exactly
# as it was trained.
# EOS follows only the conversation's last assistant turn: that is the answer a training
# example teaches the model to end. Earlier assistant turns (a retry that quotes the previous
# answer) are ended by the next "User:" line, as in the plain transcript generation always
# used; the stop strings below end an answer there too.
PLAIN_CHAT_TEMPLATE = (
    "{{- bos_token if bos_token else '' -}}"
    "{%- for message in messages -%}"
    "{%- if not loop.first %}{{ '\n\n' }}{% endif -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] | trim }}"
    "{%- elif message['role'] == 'user' -%}{{ 'User: ' + (message['content'] | trim) }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'Assistant: ' + (message['content'] | trim) + (eos_token if loop.last and eos_token else '') }}"
    "{%- else -%}{{ (message['role'] | capitalize) + ': ' + (message['content'] | trim) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif -%}"
)
# A base model answering in the plain layout soon invents the next turn: cut the answer there.
PLAIN_STOP_STRINGS = ("\nUser:", "\nAssistant:")
# Tokens that end an assistant turn in common chat vocabularies (besides the tokenizer's EOS).
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def plain_transcript(messages: tuple[dict[str, str], ...] | list[dict[str, str]]) -> str:
    """The plain layout as text, without BOS: 'User: ...' / 'Assistant: ...' turns, ending with 'Assistant:'."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # The environment transformers renders chat templates in.
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(PLAIN_CHAT_TEMPLATE)
    return template.render(messages=list(messages), bos_token="", eos_token="", add_generation_prompt=True)


def prompt_token_ids(tokenizer: Any, messages: tuple[dict[str, str], ...] | list[dict[str, str]]) -> list[int]:
    """Token ids of the prompt: the tokenizer's chat template if it has one, else the plain layout."""
    template = None if has_chat_template(tokenizer) else PLAIN_CHAT_TEMPLATE
    text = tokenizer.apply_chat_template(
        list(messages), chat_template=template, add_generation_prompt=True, tokenize=False
    )
    # Templates write their own BOS token when the model wants one.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def stop_token_ids(tokenizer: Any, generation_config: Any) -> list[int]:
    """EOS ids from the generation config and tokenizer, plus any end-of-turn token in the vocab."""
    ids: set[int] = set()
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return sorted(ids)


def truncate_at_stop_string(text: str, stop_strings: tuple[str, ...]) -> str:
    """`text` up to the earliest stop string (all of it when none occurs)."""
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=-1)
    return text[:cut] if cut >= 0 else text
