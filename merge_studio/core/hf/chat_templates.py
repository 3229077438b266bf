"""Chat templates a merge can give its output tokenizer, by name or as Jinja text.

The named templates are the conversation formats merged chat models most often use.
``auto`` takes the template most of the input tokenizers share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

NAMED_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{%- for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
    ),
    "llama3": (
        "{{- bos_token }}"
        "{%- for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
    ),
    "mistral": (
        "{{- bos_token }}"
        "{%- for message in messages %}"
        "{%- if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{%- elif message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{%- else %}{{ message['content'] + eos_token }}{%- endif %}"
        "{%- endfor %}"
    ),
    "alpaca": (
        "{%- for message in messages %}"
        "{%- if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{%- elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
        "{%- else %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '### Response:\\n' }}{%- endif %}"
    ),
}
AUTO = "auto"
TEMPLATE_FILE = "chat_template.jinja"


def check_chat_template(value: str) -> None:
    """Refuse a value that is neither a known name nor plausibly Jinja (a typo in a name)."""
    if value in NAMED_TEMPLATES or value == AUTO:
        return
    if "{" not in value or len(value) < 20:
        names = ", ".join([*NAMED_TEMPLATES, AUTO])
        raise ValueError(f"chat template {value!r} is not one of {names}, nor a Jinja template")


def folder_chat_template(folder: Path) -> str | None:
    """The chat template a tokenizer folder carries (``chat_template.jinja`` or tokenizer_config.json)."""
    from merge_studio.core.hf.config import read_json_file

    jinja = folder / TEMPLATE_FILE
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            template = read_json_file(cfg, "tokenizer config").get("chat_template")
        except Exception:  # noqa: BLE001 - an unreadable config simply has no template
            return None
        if isinstance(template, list):  # [{name: default, template: ...}, ...]
            template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
        return template if isinstance(template, str) else None
    return None


def resolve_chat_template(value: str | None, folders: Sequence[Path]) -> str | None:
    """The Jinja text for ``value``: a named template, the inputs' most common one (auto), or the text."""
    if not value:
        return None
    if value in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[value]
    if value == AUTO:
        found = [t.strip() for f in folders if (t := folder_chat_template(f))]
        return Counter(found).most_common(1)[0][0] if found else None
    return value
